-- purpose : preferred channel: the channel of most of the customer's orders
-- grain   : one row per customer with at least one order that has a channel
-- input   : order_facts
-- params  : none
-- output  : customer_id, preferred_channel VARCHAR (ties: alphabetically first)
--           The most orders, then the first name: the least (-orders, channel)
--           per customer, two hash aggregates, which spill beyond the memory
--           limit (an ordered first(... ORDER BY ...) is holistic and does not).
WITH per_channel AS (
  SELECT customer_id, channel, count(*) AS n
  FROM order_facts
  WHERE channel IS NOT NULL
  GROUP BY customer_id, channel
)
SELECT customer_id, min(struct_pack(n := -n, c := channel)).c AS preferred_channel
FROM per_channel
GROUP BY customer_id
