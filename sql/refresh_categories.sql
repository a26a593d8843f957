-- purpose : incremental refresh state: lifetime net revenue per customer and category
--           (the sums of feat_category.sql, added batch by batch)
-- grain   : one row per (customer_id, category)
-- input   : batch_orders
-- params  : none
-- output  : customer_id, category, net DECIMAL(38,4), __bucket
SELECT customer_id, category,
       CAST(sum(CASE WHEN quantity > 0 THEN ((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)
                     ELSE (quantity * unit_price)::DECIMAL(18, 4) END) AS DECIMAL(38, 4)) AS net,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE category IS NOT NULL
GROUP BY customer_id, category
