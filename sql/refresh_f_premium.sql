-- purpose : feat_premium.sql from the refresh state
-- grain   : one row per customer with a premium line in the 12-month window
-- input   : st_premium
-- params  : $s12 (TIMESTAMP window start, a midnight)
-- output  : customer_id, premium_margin_12m DECIMAL(38,4)
SELECT customer_id, sum(margin) AS premium_margin_12m
FROM st_premium
WHERE day >= CAST($s12 AS DATE)
GROUP BY customer_id
