-- purpose : validate marketing touchpoints (an audit, see stage_orders.sql)
-- grain   : one row per source touchpoint
-- input   : touchpoints_typed
-- params  : none
-- output  : every column of touchpoints_typed, reject_reason VARCHAR (NULL = valid)
SELECT *,
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN __raw_ts IS NULL THEN 'ts is null'
    WHEN ts IS NULL THEN 'ts is not a timestamp'
    WHEN channel IS NULL OR trim(channel) = '' THEN 'channel is empty'
  END AS reject_reason
FROM touchpoints_typed
