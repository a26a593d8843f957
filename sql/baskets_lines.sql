-- purpose : the order lines that enter basket analysis and recommendations
-- grain   : one row per valid order line before as_of with quantity > 0
-- input   : order_categories (the valid order lines with the line's or the product's category)
-- params  : none
-- output  : customer_id (id), order_id (id; the order day when the orders have no order_id),
--           order_ts TIMESTAMP, product_id (product id), category VARCHAR,
--           returned_in_full BOOLEAN (returned_quantity >= quantity)
-- notes   : basket counting leaves returned-in-full lines out by default ([baskets]
--           exclude_returned); recommendations still treat them as bought (never
--           recommended again under new-only) but give them no weight.
SELECT customer_id, order_id, CAST(order_ts AS TIMESTAMP) AS order_ts, product_id,
       CAST(category AS VARCHAR) AS category,
       coalesce(returned_quantity, 0) >= quantity AS returned_in_full
FROM order_categories
WHERE quantity > 0
