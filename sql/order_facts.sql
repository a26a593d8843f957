-- purpose : one row per order, the first step of the order counts and the
--           preferred channel (aggregating per order first, then per customer,
--           is faster than COUNT(DISTINCT order_id) per customer)
-- grain   : one row per (customer_id, order_id)
-- input   : orders (valid lines before as_of; quantity defaults to 1,
--           returned_quantity to 0, order_id to the order date)
-- params  : none
-- output  : customer_id, order_id, first_ts TIMESTAMP, last_ts TIMESTAMP
--           (of lines with positive quantity; NULL for return-only orders),
--           channel VARCHAR (the first of the positive lines' channels)
-- notes   : an order is in a window when its last positive line is. The money
--           sums are taken per customer from the lines (feat_orders.sql): a
--           narrow per-order table is about half the cost of one carrying them.
SELECT
  customer_id,
  order_id,
  min(order_ts) FILTER (WHERE quantity > 0) AS first_ts,
  max(order_ts) FILTER (WHERE quantity > 0) AS last_ts,
  min(channel) FILTER (WHERE quantity > 0) AS channel
FROM orders
GROUP BY customer_id, order_id
