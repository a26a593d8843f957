-- purpose : past contacts per customer, medium and arm, and how many of them were
--           followed by an order within the response window (medium affinity)
-- grain   : one row per customer_id, medium, control
-- input   : contacts (with medium), order_times (steering_order_times.sql over the
--           orders, or the refresh state's steering_times table), given as a CTE by
--           the caller (centile.steering.history.responses_sql)
-- params  : $as_of DATE (contacts sent before it count), $window INTEGER (days)
-- output  : customer_id, medium VARCHAR, control BOOLEAN (group = 'control'),
--           contacts BIGINT, responses BIGINT, last_sent TIMESTAMP
WITH c AS (
  SELECT row_number() OVER () AS rid, customer_id, coalesce(CAST(medium AS VARCHAR), 'unknown') AS medium,
         coalesce("group", 'treatment') = 'control' AS control, sent_ts
  FROM contacts
  WHERE CAST(sent_ts AS DATE) < $as_of
), hit AS (
  SELECT c.rid, any_value(c.customer_id) AS customer_id, any_value(c.medium) AS medium,
         any_value(c.control) AS control, any_value(c.sent_ts) AS sent_ts,
         count(o.order_ts) > 0 AS responded
  FROM c LEFT JOIN order_times AS o
    ON o.customer_id = c.customer_id AND o.order_ts > c.sent_ts
   AND o.order_ts <= c.sent_ts + to_days(CAST($window AS INTEGER))
  GROUP BY c.rid
)
SELECT customer_id, CAST(medium AS VARCHAR) AS medium, CAST(control AS BOOLEAN) AS control,
       CAST(count(*) AS BIGINT) AS contacts, CAST(count(*) FILTER (WHERE responded) AS BIGINT) AS responses,
       CAST(max(sent_ts) AS TIMESTAMP) AS last_sent
FROM hit
GROUP BY customer_id, medium, control
