-- purpose : touchpoint journeys for attribution: each touchpoint joined to the conversion (order)
--           that follows it; touches after a customer's last order form a null journey ending at as_of
-- grain   : one row per touchpoint kept (inside the lookback window before its journey's end)
-- input   : touchpoints, conversions (one row per order: attribution_conversions.sql
--           over the orders, or a refresh state's order totals; a view the caller
--           registers)
-- params  : $as_of (DATE), $lookback_days (INTEGER)
-- output  : customer_id, journey BIGINT (order sequence number, 0 = null journey), converted BOOLEAN,
--           age_days DOUBLE (days from touch to journey end), channel VARCHAR, value DOUBLE (net revenue)
WITH conv AS (
  SELECT customer_id, order_id, ts, value FROM conversions),
numbered AS (
  SELECT customer_id, ts, value,
         row_number() OVER (PARTITION BY customer_id ORDER BY ts, order_id) AS seq
  FROM conv),
tp AS (
  SELECT customer_id, ts, trim(CAST(channel AS VARCHAR)) AS channel FROM touchpoints
  WHERE ts < CAST($as_of AS TIMESTAMP)),
ev AS (
  SELECT customer_id, ts, 0 AS kind, channel FROM tp
  UNION ALL
  SELECT customer_id, ts, 1 AS kind, NULL AS channel FROM conv),
seq AS (
  -- conversions strictly before each touch (a touch at an order's instant counts before it)
  SELECT customer_id, ts, kind, channel,
         sum(kind) OVER (PARTITION BY customer_id ORDER BY ts, kind
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS n_before
  FROM ev),
joined AS (
  SELECT s.customer_id, s.ts, s.channel, c.seq, c.value,
         coalesce(c.ts, CAST($as_of AS TIMESTAMP)) AS end_ts
  FROM seq AS s LEFT JOIN numbered AS c ON c.customer_id = s.customer_id AND c.seq = s.n_before + 1
  WHERE s.kind = 0)
SELECT customer_id,
       CAST(coalesce(seq, 0) AS BIGINT) AS journey,
       seq IS NOT NULL AS converted,
       CAST((epoch(end_ts) - epoch(ts)) / 86400.0 AS DOUBLE) AS age_days,
       CAST(channel AS VARCHAR) AS channel,
       CAST(coalesce(value, 0) AS DOUBLE) AS value
FROM joined
WHERE ts >= end_ts - to_days(CAST($lookback_days AS INTEGER))
ORDER BY customer_id, journey, age_days DESC, channel
