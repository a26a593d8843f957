-- purpose : each customer's net spend per category (assortment affinity of a medium)
-- grain   : one row per customer_id, category
-- input   : orders (with category)
-- params  : none
-- output  : customer_id, category VARCHAR, revenue DOUBLE
SELECT customer_id, CAST(category AS VARCHAR) AS category,
       CAST(sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS DOUBLE) AS revenue
FROM orders
WHERE category IS NOT NULL
GROUP BY customer_id, category
