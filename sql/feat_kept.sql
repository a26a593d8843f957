-- purpose : max_price_kept_24m: the highest unit_price among the items the
--           customer bought in the 24-month window and kept
-- grain   : one row per customer with a kept item
-- input   : orders, f_orders (feat_orders.sql: kept_max_24m, the highest
--           price among the kept lines of the window; sent_back_24m, a
--           negative line with a product in the window)
-- params  : $s24 (TIMESTAMP window start)
-- output  : customer_id, max_price_kept_24m DOUBLE
-- notes   : a line is kept when quantity - returned_quantity > 0; when the
--           customer also sent the product back on negative-quantity lines,
--           the product counts only if its net quantity over the window
--           (bought - returned - |negative|) stays positive. Only the
--           customers with a negative line (sent_back_24m) can lose a product:
--           their window lines are read in one scan and kept (a few percent of
--           the lines); of them only those with a product gone are computed
--           again, the others keep kept_max_24m.
WITH w AS MATERIALIZED (
  SELECT o.customer_id, o.product_id, o.unit_price, o.quantity, o.returned_quantity
  FROM orders AS o
  SEMI JOIN (SELECT customer_id FROM f_orders WHERE sent_back_24m) AS s USING (customer_id)
  WHERE o.order_ts >= $s24
),
sent_back AS (
  SELECT DISTINCT customer_id, product_id FROM w WHERE quantity < 0 AND product_id IS NOT NULL
),
gone AS (
  SELECT w.customer_id, w.product_id
  FROM w SEMI JOIN sent_back USING (customer_id, product_id)
  GROUP BY w.customer_id, w.product_id
  HAVING sum(CASE WHEN quantity > 0 THEN quantity - returned_quantity ELSE quantity END) <= 0
),
touched AS (
  SELECT DISTINCT customer_id FROM gone
)
SELECT f.customer_id, f.kept_max_24m AS max_price_kept_24m
FROM f_orders AS f ANTI JOIN touched USING (customer_id)
WHERE f.kept_max_24m IS NOT NULL
UNION ALL
SELECT w.customer_id, max(w.unit_price) AS max_price_kept_24m
FROM w SEMI JOIN touched USING (customer_id) ANTI JOIN gone USING (customer_id, product_id)
WHERE w.quantity - w.returned_quantity > 0 AND w.quantity > 0
GROUP BY w.customer_id
