-- purpose : feat_email.sql from the refresh state
-- grain   : one row per customer with e-mail events
-- input   : st_email_keyed, st_email_days
-- params  : $s12 (TIMESTAMP window start, a midnight)
-- output  : customer_id, emails_sent_12m, opened_12m, clicked_12m (types of feat_email.sql)
-- notes   : every event of the state is before as_of (as_of is at least the watermark).
WITH per_customer AS (
  SELECT customer_id,
         count(*) FILTER (WHERE sent_ts >= $s12) AS sent,
         count(*) FILTER (WHERE sent_ts >= $s12 AND opened) AS opened,
         count(*) FILTER (WHERE sent_ts >= $s12 AND clicked) AS clicked
  FROM st_email_keyed
  GROUP BY customer_id
  UNION ALL
  SELECT customer_id,
         CAST(coalesce(sum(sent) FILTER (WHERE day >= CAST($s12 AS DATE)), 0) AS BIGINT),
         CAST(coalesce(sum(opens) FILTER (WHERE day >= CAST($s12 AS DATE)), 0) AS BIGINT),
         CAST(coalesce(sum(clicks) FILTER (WHERE day >= CAST($s12 AS DATE)), 0) AS BIGINT)
  FROM st_email_days
  GROUP BY customer_id
  UNION ALL  -- customers whose campaign-less events are all pruned still have a row
  SELECT customer_id, 0, 0, 0 FROM st_totals WHERE events > 0
)
SELECT customer_id,
       sum(sent) AS emails_sent_12m,
       least(sum(opened), sum(sent)) AS opened_12m,
       least(sum(clicked), sum(sent)) AS clicked_12m
FROM per_customer
GROUP BY customer_id
