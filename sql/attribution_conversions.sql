-- purpose : attribution's conversions: every order of the run, worth its net revenue
--           (attribution_journeys.sql reads them as `conversions`)
-- grain   : one row per (customer_id, order_id); a NULL order_id is one order per customer
-- input   : orders (valid lines before as_of)
-- params  : none
-- output  : customer_id, order_id, ts TIMESTAMP (first line), value DOUBLE (net revenue),
--           exact DECIMAL(38,4)
-- notes   : every line counts (return lines too); each line's (quantity - returned_quantity)
--           x unit_price is rounded to DECIMAL(18,4) and summed exactly (see order_facts.sql):
--           the same value whatever the thread count. A refresh state keeps the same rows
--           (refresh_order_totals.sql: ts, revenue).
SELECT customer_id, order_id, min(order_ts) AS ts,
       CAST(sum(((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)) AS DOUBLE) AS value,
       sum(((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)) AS exact
FROM orders
GROUP BY customer_id, order_id
