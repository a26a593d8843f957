-- purpose : validate e-mail events (an audit, see stage_orders.sql)
-- grain   : one row per source e-mail event
-- input   : email_events_typed
-- params  : none
-- output  : every column of email_events_typed with event normalised to
--           ENUM ('sent', 'open', 'click'), reject_reason VARCHAR (NULL = valid)
-- notes   : an ENUM is one byte per row: the e-mail table is often larger than
--           the orders. Values already spelt sent / open / click are cast
--           directly; only the others are trimmed and lower-cased (once).
SELECT * EXCLUDE (__event) REPLACE (__event AS event),
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN __raw_ts IS NULL THEN 'ts is null'
    WHEN ts IS NULL THEN 'ts is not a timestamp'
    WHEN __event IS NULL THEN 'event is not one of sent, open, click'
    WHEN __raw_campaign_id IS NOT NULL AND campaign_id IS NULL THEN 'campaign_id is not a valid id'
  END AS reject_reason
FROM (
  SELECT *,
    coalesce(
      TRY_CAST(event AS ENUM ('sent', 'open', 'click')),
      CAST(CASE lower(trim(event))
        WHEN 'sent' THEN 'sent' WHEN 'send' THEN 'sent' WHEN 'delivered' THEN 'sent'
        WHEN 'open' THEN 'open' WHEN 'opened' THEN 'open'
        WHEN 'click' THEN 'click' WHEN 'clicked' THEN 'click'
      END AS ENUM ('sent', 'open', 'click'))) AS __event
  FROM email_events_typed
) typed
