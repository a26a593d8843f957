-- purpose : one row per order, the first step of the per-customer features
--           (aggregating per order first, then per customer, is faster than
--           COUNT(DISTINCT order_id) per customer)
-- grain   : one row per (customer_id, order_id)
-- input   : orders (valid lines before as_of; quantity defaults to 1,
--           returned_quantity to 0, order_id to the order date)
-- params  : $s6, $s12 (TIMESTAMP window starts: as_of minus 6m / 12m days)
-- output  : customer_id, order_id, first_ts TIMESTAMP, last_ts TIMESTAMP
--           (of lines with positive quantity; NULL for return-only orders),
--           in_6m BOOLEAN, in_12m BOOLEAN, gross_all DECIMAL, gross_12m DECIMAL,
--           returned_all DECIMAL, returned_12m DECIMAL, channel VARCHAR
-- notes   : gross = quantity x unit_price over positive lines; returned =
--           returned_quantity x unit_price of positive lines plus
--           |quantity| x unit_price of negative lines; windows by line ts.
--           Line values are rounded to DECIMAL(18,4) before summing: exact
--           sums are the same whatever order parallel threads add them in, so
--           reruns give identical bytes (DOUBLE sums differ in the last bits,
--           which would reorder ties in the ranks).
SELECT
  customer_id,
  order_id,
  min(order_ts) FILTER (WHERE quantity > 0) AS first_ts,
  max(order_ts) FILTER (WHERE quantity > 0) AS last_ts,
  coalesce(bool_or(quantity > 0 AND order_ts >= $s6), false) AS in_6m,
  coalesce(bool_or(quantity > 0 AND order_ts >= $s12), false) AS in_12m,
  sum(CASE WHEN quantity > 0 THEN (quantity * unit_price)::DECIMAL(18, 4) ELSE 0 END) AS gross_all,
  sum(CASE WHEN quantity > 0 AND order_ts >= $s12 THEN (quantity * unit_price)::DECIMAL(18, 4) ELSE 0 END)
    AS gross_12m,
  sum(CASE WHEN quantity > 0 THEN (returned_quantity * unit_price)::DECIMAL(18, 4)
           ELSE (-quantity * unit_price)::DECIMAL(18, 4) END) AS returned_all,
  sum(CASE WHEN order_ts < $s12 THEN 0
           WHEN quantity > 0 THEN (returned_quantity * unit_price)::DECIMAL(18, 4)
           ELSE (-quantity * unit_price)::DECIMAL(18, 4) END) AS returned_12m,
  min(channel) FILTER (WHERE quantity > 0) AS channel
FROM orders
GROUP BY customer_id, order_id
