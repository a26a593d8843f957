-- purpose : each customer's net spend, and the cost of goods of the lines that carry
--           unit_cost (the customer's cost-of-goods ratio)
-- grain   : one row per customer_id
-- input   : spend_sums (steering_spend_sums.sql over the orders, or the refresh state's
--           steering_spend table), given as a CTE by the caller
--           (centile.steering.history.spend_sql)
-- params  : none
-- output  : customer_id, revenue DOUBLE, costed_revenue DOUBLE (revenue of lines with
--           unit_cost), cost DOUBLE (their cost of goods)
-- notes   : the exact decimal sums are cast at the end, so the doubles do not depend on
--           the order the lines were added in.
SELECT customer_id,
       CAST(revenue AS DOUBLE) AS revenue,
       CAST(costed_revenue AS DOUBLE) AS costed_revenue,
       CAST(cost AS DOUBLE) AS cost
FROM spend_sums
