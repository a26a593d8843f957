-- purpose : net revenue per category over every customer: picks the top
--           categories whose shares become share_<category> features
-- grain   : one row per category
-- input   : order_categories (all customers: run before the partitions)
-- params  : none
-- output  : category VARCHAR, net_revenue DECIMAL (exact: the same sums as
--           feat_category.sql's, added per category instead of per customer)
SELECT category,
       sum(CASE WHEN quantity > 0 THEN ((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)
                ELSE (quantity * unit_price)::DECIMAL(18, 4) END) AS net_revenue
FROM order_categories
WHERE category IS NOT NULL
GROUP BY category
