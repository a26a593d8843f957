-- purpose : e-mail engagement over the 12-month window
-- grain   : one row per customer with e-mail events before as_of
-- input   : email_events (event normalised to sent / open / click)
-- params  : $as_of (DATE), $s12 (TIMESTAMP window start)
-- output  : customer_id, emails_sent_12m HUGEINT, opened_12m HUGEINT, clicked_12m HUGEINT
-- notes   : an e-mail is one (customer_id, campaign_id); it is in the window
--           when its first 'sent' event is; opened = any open or click (a click
--           implies an open), clicked = any click, both before as_of. Events
--           without campaign_id cannot be linked to a sent e-mail: they are
--           counted event by event, opens and clicks capped at the sends.
--           Per e-mail one small state, the OR of a flag per event: 1 = sent
--           before the window, 2 = sent in it, 4 = opened, 8 = clicked; its
--           first send is in the window when the flags hold 2 but not 1.
WITH keyed AS (
  SELECT customer_id,
         bit_or(CASE event WHEN 'sent' THEN CASE WHEN ts >= $s12 THEN 2 ELSE 1 END
                           WHEN 'open' THEN 4 ELSE 12 END::UTINYINT) AS flags
  FROM email_events
  WHERE ts < CAST($as_of AS TIMESTAMP) AND campaign_id IS NOT NULL
  GROUP BY customer_id, campaign_id
),
per_customer AS (
  SELECT customer_id,
         count(*) FILTER (WHERE flags & 3 = 2) AS sent,
         count(*) FILTER (WHERE flags & 3 = 2 AND flags & 4 = 4) AS opened,
         count(*) FILTER (WHERE flags & 3 = 2 AND flags & 8 = 8) AS clicked
  FROM keyed
  GROUP BY customer_id
  UNION ALL
  SELECT customer_id,
         count(*) FILTER (WHERE event = 'sent' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'open' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'click' AND ts >= $s12)
  FROM email_events
  WHERE ts < CAST($as_of AS TIMESTAMP) AND campaign_id IS NULL
  GROUP BY customer_id
)
SELECT customer_id,
       sum(sent) AS emails_sent_12m,
       least(sum(opened), sum(sent)) AS opened_12m,
       least(sum(clicked), sum(sent)) AS clicked_12m
FROM per_customer
GROUP BY customer_id
