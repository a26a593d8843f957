-- purpose : the order lines that enter basket analysis and recommendations
-- grain   : one row per valid order line before as_of with quantity > 0 (and, when
--           $exclude_returned, not returned in full)
-- input   : order_categories (the valid order lines with the line's or the product's category)
-- params  : $exclude_returned BOOLEAN
-- output  : customer_id (id), order_id (id; the order day when the orders have no order_id),
--           order_ts TIMESTAMP, product_id (product id), category VARCHAR
SELECT customer_id, order_id, CAST(order_ts AS TIMESTAMP) AS order_ts, product_id,
       CAST(category AS VARCHAR) AS category
FROM order_categories
WHERE quantity > 0
  AND (NOT $exclude_returned OR coalesce(returned_quantity, 0) < quantity)
