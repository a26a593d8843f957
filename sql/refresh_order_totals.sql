-- purpose : incremental refresh state: per order, what the uplift's outcome windows
--           (centile.uplift.inputs.session_units) and attribution's conversions
--           (attribution_conversions.sql) read of its lines, mergeable by min /
--           bool_or / addition
-- grain   : one row per (customer_id, order_id); a NULL order_id is one order per
--           customer, as GROUP BY makes it in those stages
-- input   : batch_orders (a batch's valid order lines, contract defaults applied,
--           __cost the products table's unit_cost, with __bucket)
-- params  : none
-- output  : customer_id, order_id, ts TIMESTAMP (first line), is_order BOOLEAN (a
--           line of positive quantity), revenue DECIMAL(38,4), margin
--           DECIMAL(38,4), __bucket INTEGER
-- notes   : every line counts (returns and zero-quantity lines too). A line's net
--           quantity is quantity - returned_quantity for a positive line and the
--           (negative) quantity of a return line: validation leaves a line of
--           quantity <= 0 no returned_quantity, so this is also attribution's
--           quantity - returned_quantity. Each line's revenue and margin are
--           rounded to DECIMAL(18,4) as the stages round them, so the sum over
--           batches is the very decimal a full read sums. The margin's cost is the
--           line's unit_cost, else the products table's, else 0: the uplift's
--           coalesce over the columns present (absent ones are NULL here).
SELECT customer_id, order_id,
       min(order_ts) AS ts,
       bool_or(quantity > 0) AS is_order,
       CAST(sum((unit_price * CASE WHEN quantity > 0 THEN quantity - returned_quantity
                                   ELSE quantity END)::DECIMAL(18, 4)) AS DECIMAL(38, 4)) AS revenue,
       CAST(sum(((unit_price - coalesce(unit_cost, __cost, 0))
                 * CASE WHEN quantity > 0 THEN quantity - returned_quantity
                        ELSE quantity END)::DECIMAL(18, 4)) AS DECIMAL(38, 4)) AS margin,
       any_value(__bucket) AS __bucket
FROM batch_orders
GROUP BY customer_id, order_id
