-- purpose : each customer's net spend per category of the line, as exact decimal sums
--           (steering_category_spend.sql reads them as `category_sums`)
-- grain   : one row per customer_id, category
-- input   : orders (the line's own category, not the product's)
-- params  : none
-- output  : customer_id, category VARCHAR, revenue DECIMAL(38,6)
-- notes   : return lines (negative quantity) count; lines without a category do not. The
--           refresh state keeps the same sums (refresh_steering_categories.sql).
SELECT customer_id, CAST(category AS VARCHAR) AS category,
       sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS revenue
FROM orders
WHERE category IS NOT NULL
GROUP BY customer_id, category
