-- purpose : incremental refresh state: one row per e-mail (customer, campaign), see feat_email.sql
-- grain   : one row per (customer_id, campaign_id), campaign_id not NULL
-- input   : batch_email
-- params  : none
-- output  : customer_id, campaign_id, sent_ts TIMESTAMP (first 'sent', min), opened BOOLEAN,
--           clicked BOOLEAN (bool_or), __bucket
SELECT customer_id, campaign_id,
       min(ts) FILTER (WHERE event = 'sent') AS sent_ts,
       bool_or(event IN ('open', 'click')) AS opened,
       bool_or(event = 'click') AS clicked,
       any_value(__bucket) AS __bucket
FROM batch_email
WHERE campaign_id IS NOT NULL
GROUP BY customer_id, campaign_id
