-- purpose : incremental refresh state: premium margin per customer and day (see feat_premium.sql)
-- grain   : one row per (customer_id, day) with a line priced above its product's market price
-- input   : batch_orders (with __market, __cost: the product's market_price and unit_cost)
-- params  : none
-- output  : customer_id, day DATE, margin DECIMAL(38,4), __bucket
-- notes   : each line's margin is rounded to DECIMAL(18, 4) as in feat_premium.sql, so a window's
--           sum of whole days is the same exact decimal.
SELECT customer_id, CAST(order_ts AS DATE) AS day,
       CAST(sum(((unit_price - coalesce(unit_cost, __cost, 0))
                 * CASE WHEN quantity > 0 THEN quantity - returned_quantity ELSE quantity END)::DECIMAL(18, 4))
            AS DECIMAL(38, 4)) AS margin,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE __market < unit_price
GROUP BY customer_id, CAST(order_ts AS DATE)
