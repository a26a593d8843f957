-- purpose : incremental refresh state: the distinct order times of positive lines
--           (steering_order_times.sql), a keyed set merged by union
-- grain   : one row per customer_id, order_ts
-- input   : batch_orders
-- params  : none
-- output  : customer_id, order_ts TIMESTAMP, __bucket
-- notes   : kept whole (never pruned): the response counts join them to contacts sent
--           at any time before as_of.
SELECT customer_id, CAST(order_ts AS TIMESTAMP) AS order_ts, any_value(__bucket) AS __bucket
FROM batch_orders
WHERE quantity > 0
GROUP BY customer_id, order_ts
