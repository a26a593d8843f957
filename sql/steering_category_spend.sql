-- purpose : each customer's net spend per category (assortment affinity of a medium)
-- grain   : one row per customer_id, category
-- input   : category_sums (steering_category_sums.sql over the orders, or the refresh
--           state's steering_categories table), given as a CTE by the caller
--           (centile.steering.history.category_sql)
-- params  : none
-- output  : customer_id, category VARCHAR, revenue DOUBLE
SELECT customer_id, CAST(category AS VARCHAR) AS category, CAST(revenue AS DOUBLE) AS revenue
FROM category_sums
