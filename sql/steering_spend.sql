-- purpose : each customer's net spend, and the cost of goods of the lines that carry
--           unit_cost (the customer's cost-of-goods ratio)
-- grain   : one row per customer_id
-- input   : orders
-- params  : none
-- output  : customer_id, revenue DOUBLE, costed_revenue DOUBLE (revenue of lines with
--           unit_cost), cost DOUBLE (their cost of goods)
SELECT customer_id,
       CAST(sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6))) AS DOUBLE) AS revenue,
       CAST(coalesce(sum(CAST((quantity - returned_quantity) * unit_price AS DECIMAL(38, 6)))
            FILTER (WHERE unit_cost IS NOT NULL), 0) AS DOUBLE) AS costed_revenue,
       CAST(coalesce(sum(CAST((quantity - returned_quantity) * unit_cost AS DECIMAL(38, 6)))
            FILTER (WHERE unit_cost IS NOT NULL), 0) AS DOUBLE) AS cost
FROM orders
GROUP BY customer_id
