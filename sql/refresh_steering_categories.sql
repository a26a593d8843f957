-- purpose : incremental refresh state: the steering stage's net spend per customer and
--           category of the line (steering_category_sums.sql), mergeable by addition
-- grain   : one row per customer_id, category
-- input   : batch_orders (__line_category: the line's own category, never the
--           product's, which the features' categories take when the lines have none)
-- params  : none
-- output  : customer_id, category VARCHAR, revenue DECIMAL(38,6), __bucket
-- notes   : the line values and their rounding are steering_category_sums.sql's.
SELECT customer_id, CAST(__line_category AS VARCHAR) AS category,
       sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS revenue,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE __line_category IS NOT NULL
GROUP BY customer_id, __line_category
