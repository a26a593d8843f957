-- purpose : incremental refresh state: money per customer and day (windowed revenue)
-- grain   : one row per (customer_id, day)
-- input   : batch_orders
-- params  : none
-- output  : customer_id, day DATE, gross DECIMAL(38,4), returned DECIMAL(38,4), __bucket
-- notes   : the line values and their rounding are order_facts.sql's, so every window sum
--           (a sum of whole days: window starts are midnights) is the same exact decimal.
SELECT customer_id, CAST(order_ts AS DATE) AS day,
       CAST(sum(CASE WHEN quantity > 0 THEN (quantity * unit_price)::DECIMAL(18, 4) ELSE 0 END)
            AS DECIMAL(38, 4)) AS gross,
       CAST(sum(CASE WHEN quantity > 0 THEN (returned_quantity * unit_price)::DECIMAL(18, 4)
                     ELSE (-quantity * unit_price)::DECIMAL(18, 4) END) AS DECIMAL(38, 4)) AS returned,
       any_value(__bucket) AS __bucket
FROM batch_orders
GROUP BY customer_id, CAST(order_ts AS DATE)
