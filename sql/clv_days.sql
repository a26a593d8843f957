-- purpose : purchase days, the transactions of the buy-till-you-die summary
--           (clv_summary.sql reads them as `days`)
-- grain   : one row per (customer_id, day) with a line of positive quantity
-- input   : orders (valid lines before as_of)
-- params  : $hold_end DATE (the last day kept)
-- output  : customer_id, day DATE, value DECIMAL(38,4)
-- notes   : every line with positive quantity of a customer on one day is one
--           transaction; its value is the kept value, (quantity - returned_quantity)
--           x unit_price, each line rounded to DECIMAL(18,4) and summed exactly.
--           Return lines (negative quantity) are not transactions. The refresh
--           state keeps the same days (refresh_purchases.sql).
SELECT customer_id,
       CAST(order_ts AS DATE) AS day,
       -- DECIMAL: exact sums, the same bytes whatever order parallel threads add in
       sum(((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)) AS value
FROM orders
WHERE quantity > 0 AND CAST(order_ts AS DATE) <= $hold_end
GROUP BY customer_id, CAST(order_ts AS DATE)
