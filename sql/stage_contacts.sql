-- purpose : validate campaign contacts (an audit, see stage_orders.sql)
-- grain   : one row per source contact
-- input   : contacts_typed
-- params  : none
-- output  : every column of contacts_typed with group normalised to
--           treatment / control, reject_reason VARCHAR (NULL = valid)
SELECT * REPLACE (lower(trim("group")) AS "group"),
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN __raw_campaign_id IS NULL THEN 'campaign_id is null'
    WHEN campaign_id IS NULL THEN 'campaign_id is not a valid id'
    WHEN __raw_sent_ts IS NULL THEN 'sent_ts is null'
    WHEN sent_ts IS NULL THEN 'sent_ts is not a timestamp'
    WHEN __raw_cost IS NOT NULL AND cost IS NULL THEN 'cost is not a number'
    WHEN cost < 0 THEN 'cost is negative'
    WHEN "group" IS NOT NULL AND lower(trim("group")) NOT IN ('treatment', 'control')
      THEN 'group is not treatment or control'
  END AS reject_reason
FROM contacts_typed
