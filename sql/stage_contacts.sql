-- purpose : validate campaign contacts (an audit, see stage_orders.sql)
-- grain   : one row per source contact
-- input   : contacts_typed
-- params  : none
-- output  : every column of contacts_typed with group (the arm: control,
--           treatment, or any name of a multi-arm test) normalised to lower
--           case without surrounding blanks; reject_reason VARCHAR (NULL = valid)
SELECT * REPLACE (lower(trim("group")) AS "group"),
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN __raw_campaign_id IS NULL THEN 'campaign_id is null'
    WHEN campaign_id IS NULL THEN 'campaign_id is not a valid id'
    WHEN __raw_sent_ts IS NULL THEN 'sent_ts is null'
    WHEN sent_ts IS NULL THEN 'sent_ts is not a timestamp'
    WHEN __raw_cost IS NOT NULL AND (cost IS NULL OR isnan(cost) OR isinf(cost)) THEN 'cost is not a number'
    WHEN cost >= 1e13 THEN 'cost is 1e13 or more'
    WHEN cost < 0 THEN 'cost is negative'
    WHEN "group" IS NOT NULL AND trim("group") = '' THEN 'group is blank (use control, treatment or an arm name)'
  END AS reject_reason
FROM contacts_typed
