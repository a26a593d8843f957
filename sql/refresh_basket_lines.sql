-- purpose : incremental refresh state: the order lines of baskets and recommendations
--           (baskets_lines.sql), folded into a form that merges by min / max
-- grain   : one row per (customer_id, order_id, product_id, category, kept) of the lines
--           with quantity > 0 and a product or a category; product_id or category may be NULL
-- input   : batch_orders (a batch's valid order lines, contract defaults applied, with
--           __bucket; category is the line's, or the product's when the lines have none:
--           the session's order_categories)
-- params  : none
-- output  : customer_id, order_id, product_id, category VARCHAR, kept BOOLEAN (not returned
--           in full: returned_quantity < quantity), first_ts TIMESTAMP (min order_ts),
--           last_ts TIMESTAMP (max order_ts), __bucket INTEGER
-- notes   : the basket and recommendation passes read, per (customer, order, item), whether
--           a line (a kept line) exists, the first order_ts and, with a cutoff, whether a
--           (kept) line lies before / from the cutoff: min and max order_ts per kept flag
--           answer all of them (centile.refresh.baskets). min / max are idempotent, so a
--           line applied twice changes nothing; a return line (negative quantity) is no
--           basket line, in whichever batch it arrives.
SELECT customer_id, order_id, product_id, CAST(category AS VARCHAR) AS category,
       returned_quantity < quantity AS kept,
       CAST(min(order_ts) AS TIMESTAMP) AS first_ts,
       CAST(max(order_ts) AS TIMESTAMP) AS last_ts,
       any_value(__bucket) AS __bucket
FROM batch_orders
WHERE quantity > 0 AND (product_id IS NOT NULL OR category IS NOT NULL)
GROUP BY customer_id, order_id, product_id, CAST(category AS VARCHAR), returned_quantity < quantity
