-- purpose : incremental refresh state: the steering stage's spend sums per customer
--           (steering_spend_sums.sql), mergeable by addition
-- grain   : one row per customer_id
-- input   : batch_orders
-- params  : none
-- output  : customer_id, revenue DECIMAL(38,6), costed_revenue DECIMAL(38,6),
--           cost DECIMAL(38,6), __bucket
-- notes   : the line values and their rounding are steering_spend_sums.sql's, so the sum
--           over batches is the very decimal a full read sums; a return arriving in a
--           later batch as a negative line adds its own (negative) value.
SELECT customer_id,
       sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS revenue,
       coalesce(sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6)))
                FILTER (WHERE unit_cost IS NOT NULL), 0) AS costed_revenue,
       coalesce(sum(CAST((quantity - returned_quantity) * unit_cost AS DECIMAL(38, 6)))
                FILTER (WHERE unit_cost IS NOT NULL), 0) AS cost,
       any_value(__bucket) AS __bucket
FROM batch_orders
GROUP BY customer_id
