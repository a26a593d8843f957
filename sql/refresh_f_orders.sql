-- purpose : feat_orders.sql from the refresh state instead of the order lines
-- grain   : one row per customer of st_totals
-- input   : st_totals, st_orders, st_days (the refresh state, every partition)
-- params  : $s6, $s12 (TIMESTAMP window starts, midnights)
-- output  : the columns and types of feat_orders.sql
WITH o AS (
  SELECT customer_id,
         min(first_ts) AS first_order_ts,
         max(last_ts) AS last_order_ts,
         count(*) FILTER (WHERE last_ts >= $s6) AS orders_6m,
         count(*) FILTER (WHERE last_ts >= $s12) AS orders_12m,
         count(*) AS orders_total
  FROM st_orders
  GROUP BY customer_id
),
d AS (
  SELECT customer_id, sum(gross) AS gross_12m, sum(returned) AS returned_12m
  FROM st_days
  WHERE day >= CAST($s12 AS DATE)
  GROUP BY customer_id
)
SELECT t.customer_id,
       o.first_order_ts, o.last_order_ts,
       coalesce(o.orders_6m, 0) AS orders_6m,
       coalesce(o.orders_12m, 0) AS orders_12m,
       coalesce(o.orders_total, 0) AS orders_total,
       coalesce(d.gross_12m, CAST(0 AS DECIMAL(38, 4))) AS gross_12m,
       coalesce(d.returned_12m, CAST(0 AS DECIMAL(38, 4))) AS returned_12m,
       t.gross AS gross_all,
       t.returned AS returned_all
FROM st_totals AS t
LEFT JOIN o USING (customer_id)
LEFT JOIN d USING (customer_id)
WHERE t.lines > 0
