-- purpose : e-mail engagement over the 12-month window
-- grain   : one row per customer with e-mail events before as_of
-- input   : email_events (event normalised to sent / open / click)
-- params  : $as_of (DATE), $s12 (TIMESTAMP window start)
-- output  : customer_id, emails_sent_12m BIGINT, opened_12m BIGINT, clicked_12m BIGINT
-- notes   : an e-mail is one (customer_id, campaign_id); it is in the window
--           when its first 'sent' event is; opened = any open or click (a click
--           implies an open), clicked = any click, both before as_of. Events
--           without campaign_id cannot be linked to a sent e-mail: they are
--           counted event by event, opens and clicks capped at the sends.
WITH ev AS (
  SELECT * FROM email_events WHERE ts < CAST($as_of AS TIMESTAMP)
),
keyed AS (
  SELECT customer_id,
         min(ts) FILTER (WHERE event = 'sent') AS sent_ts,
         bool_or(event IN ('open', 'click')) AS opened,
         bool_or(event = 'click') AS clicked
  FROM ev
  WHERE campaign_id IS NOT NULL
  GROUP BY customer_id, campaign_id
),
per_customer AS (
  SELECT customer_id,
         count(*) FILTER (WHERE sent_ts >= $s12) AS sent,
         count(*) FILTER (WHERE sent_ts >= $s12 AND opened) AS opened,
         count(*) FILTER (WHERE sent_ts >= $s12 AND clicked) AS clicked
  FROM keyed
  GROUP BY customer_id
  UNION ALL
  SELECT customer_id,
         count(*) FILTER (WHERE event = 'sent' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'open' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'click' AND ts >= $s12)
  FROM ev
  WHERE campaign_id IS NULL
  GROUP BY customer_id
)
SELECT customer_id,
       sum(sent) AS emails_sent_12m,
       least(sum(opened), sum(sent)) AS opened_12m,
       least(sum(clicked), sum(sent)) AS clicked_12m
FROM per_customer
GROUP BY customer_id
