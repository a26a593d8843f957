-- purpose : feat_channel.sql from the refresh state's orders
-- grain   : one row per customer with an order that has a channel
-- input   : st_orders
-- params  : none
-- output  : customer_id, preferred_channel VARCHAR (ties: alphabetically first)
WITH per_channel AS (
  SELECT customer_id, channel, count(*) AS n
  FROM st_orders
  WHERE channel IS NOT NULL
  GROUP BY customer_id, channel
),
most AS (
  SELECT customer_id, max(n) AS n FROM per_channel GROUP BY customer_id
)
SELECT customer_id, min(channel) AS preferred_channel
FROM per_channel JOIN most USING (customer_id, n)
GROUP BY customer_id
