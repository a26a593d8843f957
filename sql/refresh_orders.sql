-- purpose : incremental refresh state: one row per order with a positive line
--           (the order-level part of order_facts.sql, mergeable by min / max)
-- grain   : one row per (customer_id, order_id)
-- input   : batch_orders (a batch's valid order lines, contract defaults applied, with __bucket)
-- params  : none
-- output  : customer_id, order_id, first_ts TIMESTAMP (min), last_ts TIMESTAMP (max),
--           channel VARCHAR (min), __bucket INTEGER
-- notes   : an order is in a window when its newest positive line is (order_facts'
--           bool_or(quantity > 0 AND order_ts >= start) is max(ts) >= start); return-only
--           orders count for nothing at order level (their money is in refresh_days).
SELECT customer_id, order_id,
       min(order_ts) AS first_ts,
       max(order_ts) AS last_ts,
       min(channel) AS channel,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE quantity > 0
GROUP BY customer_id, order_id
