-- purpose : net revenue per customer and category (for category shares)
-- grain   : one row per (customer_id, category)
-- input   : order_categories (the valid lines with their category: the line's
--           own category column if the orders table has one, else the
--           product's category from products)
-- params  : none
-- output  : customer_id, category VARCHAR, net_revenue DECIMAL (exact sums: see order_facts.sql)
SELECT customer_id, category,
       sum(CASE WHEN quantity > 0 THEN ((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)
                ELSE (quantity * unit_price)::DECIMAL(18, 4) END) AS net_revenue
FROM order_categories
WHERE category IS NOT NULL
GROUP BY customer_id, category
