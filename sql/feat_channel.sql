-- purpose : preferred channel: the channel of most of the customer's orders
-- grain   : one row per customer with at least one order that has a channel
-- input   : order_facts
-- params  : none
-- output  : customer_id, preferred_channel VARCHAR (ties: alphabetically first)
SELECT customer_id, first(channel ORDER BY n DESC, channel ASC) AS preferred_channel
FROM (
  SELECT customer_id, channel, count(*) AS n
  FROM order_facts
  WHERE channel IS NOT NULL
  GROUP BY customer_id, channel
) per_channel
GROUP BY customer_id
