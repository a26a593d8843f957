-- purpose : incremental refresh state: e-mail events without campaign_id per customer and day
-- grain   : one row per (customer_id, day)
-- input   : batch_email
-- params  : none
-- output  : customer_id, day DATE, sent BIGINT, opens BIGINT, clicks BIGINT, __bucket
SELECT customer_id, CAST(ts AS DATE) AS day,
       count(*) FILTER (WHERE event = 'sent') AS sent,
       count(*) FILTER (WHERE event = 'open') AS opens,
       count(*) FILTER (WHERE event = 'click') AS clicks,
       any_value(__bucket) AS __bucket
FROM batch_email
WHERE campaign_id IS NULL
GROUP BY customer_id, CAST(ts AS DATE)
