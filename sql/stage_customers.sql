-- purpose : validate the customer master table (an audit, see stage_orders.sql)
-- grain   : one row per source customer row
-- input   : customers_typed
-- params  : none
-- output  : every column of customers_typed, reject_reason VARCHAR (NULL = valid)
-- notes   : customer_id is a key: every row of a duplicated id is set aside.
SELECT *,
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN count(*) OVER (PARTITION BY customer_id) > 1 THEN 'duplicate customer_id'
    WHEN __raw_signup_ts IS NOT NULL AND signup_ts IS NULL THEN 'signup_ts is not a timestamp'
    WHEN __raw_birth_year IS NOT NULL AND birth_year IS NULL THEN 'birth_year is not an integer'
    WHEN birth_year NOT BETWEEN 1880 AND 2030 THEN 'birth_year outside 1880..2030'
  END AS reject_reason
FROM customers_typed
