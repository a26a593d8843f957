-- purpose : incremental refresh state for max_price_kept_24m (see feat_kept.sql)
-- grain   : one row per (customer_id, product_id, day); product_id may be NULL
-- input   : batch_orders
-- params  : none
-- output  : customer_id, product_id, day DATE, price DOUBLE (the highest unit_price of the
--           day's kept lines: quantity > 0 and quantity - returned_quantity > 0; NULL if none),
--           net DOUBLE (bought - returned - |negative| quantity), neg BOOLEAN (a negative
--           line), __bucket
-- notes   : a product is gone from the window when it has a negative line there and its net
--           quantity over the window is <= 0: both are sums / ORs of whole days.
SELECT customer_id, product_id, CAST(order_ts AS DATE) AS day,
       max(unit_price) FILTER (WHERE quantity > 0 AND quantity - returned_quantity > 0) AS price,
       sum(CASE WHEN quantity > 0 THEN quantity - returned_quantity ELSE quantity END) AS net,
       bool_or(quantity < 0) AS neg,
       any_value(__bucket) AS __bucket
FROM batch_orders
GROUP BY customer_id, product_id, CAST(order_ts AS DATE)
