-- purpose : max_price_kept_24m: the highest unit_price of a product the
--           customer bought in the 24-month window and did not return in full
-- grain   : one row per customer with such a product
-- input   : orders
-- params  : $s24 (TIMESTAMP window start)
-- output  : customer_id, max_price_kept_24m DOUBLE
-- notes   : per (customer, product): kept = positive quantity - returned
--           quantity - |negative quantity| > 0; lines without product_id are
--           judged one by one.
WITH w AS (
  SELECT * FROM orders WHERE order_ts >= $s24
),
per_product AS (
  SELECT customer_id,
         max(unit_price) FILTER (WHERE quantity > 0) AS price,
         sum(CASE WHEN quantity > 0 THEN quantity - returned_quantity ELSE quantity END) AS kept
  FROM w
  WHERE product_id IS NOT NULL
  GROUP BY customer_id, product_id
  UNION ALL
  SELECT customer_id, unit_price AS price, quantity - returned_quantity AS kept
  FROM w
  WHERE product_id IS NULL AND quantity > 0
)
SELECT customer_id, max(price) AS max_price_kept_24m
FROM per_product
WHERE kept > 0 AND price IS NOT NULL
GROUP BY customer_id
