-- purpose : each customer's net spend, and the revenue and cost of goods of the lines
--           that carry unit_cost, as exact decimal sums (steering_spend.sql reads them
--           as `spend_sums`)
-- grain   : one row per customer_id
-- input   : orders
-- params  : none
-- output  : customer_id, revenue DECIMAL(38,6), costed_revenue DECIMAL(38,6) (revenue of
--           lines with unit_cost; 0 without any), cost DECIMAL(38,6) (their cost of goods)
-- notes   : every line counts, return lines (negative quantity) too; each line's value is
--           rounded to DECIMAL(38,6) and summed exactly, so any split of the lines into
--           parts summed apart and added gives the same decimals. The refresh state keeps
--           the same sums (refresh_steering_spend.sql).
SELECT customer_id,
       sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS revenue,
       coalesce(sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6)))
                FILTER (WHERE unit_cost IS NOT NULL), 0) AS costed_revenue,
       coalesce(sum(CAST((quantity - returned_quantity) * unit_cost AS DECIMAL(38, 6)))
                FILTER (WHERE unit_cost IS NOT NULL), 0) AS cost
FROM orders
GROUP BY customer_id
