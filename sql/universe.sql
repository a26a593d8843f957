-- purpose : the customer universe and its dense integer index for the kernels
-- grain   : one row per customer
-- input   : order_facts, customers, email_events
-- params  : $as_of (DATE)
-- output  : customer_id (original type), cidx BIGINT (0-based, by customer_id)
-- notes   : everyone with a valid order line before as_of, or in customers,
--           or with an e-mail event before as_of.
SELECT customer_id, CAST(row_number() OVER (ORDER BY customer_id) - 1 AS BIGINT) AS cidx
FROM (
  SELECT customer_id FROM order_facts
  UNION
  SELECT customer_id FROM customers
  UNION
  SELECT customer_id FROM email_events WHERE ts < CAST($as_of AS TIMESTAMP)
) ids
