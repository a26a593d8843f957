-- purpose : incremental refresh state: purchase days and their kept value (the
--           transactions of the CLV summary, clv_days.sql), mergeable by addition
-- grain   : one row per (customer_id, day) with a line of positive quantity
-- input   : batch_orders
-- params  : none
-- output  : customer_id, day DATE, value DECIMAL(38,4), __bucket
-- notes   : the line values and their rounding are clv_days.sql's, so the sum over
--           batches of a day's value is the very decimal a full read sums. A return
--           line (negative quantity) is no transaction and changes no value, in
--           whichever batch it arrives; returned_quantity is part of its own line.
SELECT customer_id, CAST(order_ts AS DATE) AS day,
       CAST(sum(((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)) AS DECIMAL(38, 4)) AS value,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE quantity > 0
GROUP BY customer_id, CAST(order_ts AS DATE)
