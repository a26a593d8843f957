-- purpose : the customer universe: every customer of the feature table
-- grain   : one row per customer
-- input   : f_orders (feat_orders.sql's rows: one per customer with a valid
--           order line before as_of), customers, f_email (feat_email.sql's rows:
--           one per customer with an e-mail event before as_of)
-- params  : none
-- output  : customer_id (original type); the engine orders the feature table by it
-- notes   : everyone with a valid order line before as_of, or in customers,
--           or with an e-mail event before as_of.
SELECT customer_id
FROM (
  SELECT customer_id FROM f_orders
  UNION
  SELECT customer_id FROM customers
  UNION
  SELECT customer_id FROM f_email
) ids
