-- purpose : feat_kept.sql from the refresh state (per customer, product and day)
-- grain   : one row per customer with a kept item in the 24-month window
-- input   : st_kept
-- params  : $s24 (TIMESTAMP window start, a midnight)
-- output  : customer_id, max_price_kept_24m DOUBLE
WITH w AS (
  SELECT * FROM st_kept WHERE day >= CAST($s24 AS DATE)
),
gone AS (
  SELECT customer_id, product_id
  FROM w
  WHERE product_id IS NOT NULL
  GROUP BY customer_id, product_id
  HAVING bool_or(neg) AND sum(net) <= 0
)
SELECT w.customer_id, max(w.price) AS max_price_kept_24m
FROM w ANTI JOIN gone USING (customer_id, product_id)
WHERE w.price IS NOT NULL
GROUP BY w.customer_id
