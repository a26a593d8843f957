-- purpose : premium_margin_12m: contribution margin earned on lines priced
--           above the market (the price-ignorer criterion)
-- grain   : one row per customer with such a line in the 12-month window
-- input   : orders, products (product_id, market_price, unit_cost)
-- params  : $s12 (TIMESTAMP window start)
-- output  : customer_id, premium_margin_12m DECIMAL (exact sums: see order_facts.sql)
-- notes   : margin = (unit_price - unit_cost) x net quantity, unit_cost from
--           the line, else from products, else 0 (the margin is then revenue);
--           net quantity = quantity - returned_quantity (negative lines count
--           negatively); only lines whose product has market_price < unit_price.
SELECT o.customer_id,
       sum(((o.unit_price - coalesce(o.unit_cost, p.unit_cost, 0))
            * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity ELSE o.quantity END)::DECIMAL(18, 4))
         AS premium_margin_12m
FROM orders AS o
JOIN products AS p ON p.product_id = o.product_id
WHERE o.order_ts >= $s12 AND p.market_price < o.unit_price
GROUP BY o.customer_id
