-- purpose : validate order lines against the data contract (an audit: rows
--           with a non-NULL reject_reason are set aside into `rejects`)
-- grain   : one row per source order line (after the config's row filter)
-- input   : orders_typed (canonical typed columns plus __raw_<col> raw values)
-- params  : none
-- output  : every column of orders_typed, reject_reason VARCHAR (NULL = valid)
-- notes   : a zero unit_price is valid (free item); a negative quantity is a
--           return line; the first failing rule names the row's reason. Line
--           values must stay below 1e13: features sum them as DECIMAL(18,4).
SELECT *,
  CASE
    WHEN __raw_customer_id IS NULL THEN 'customer_id is null (guest order)'
    WHEN customer_id IS NULL THEN 'customer_id is not a valid id'
    WHEN __raw_order_ts IS NULL THEN 'order_ts is null'
    WHEN order_ts IS NULL THEN 'order_ts is not a timestamp'
    WHEN __raw_unit_price IS NULL THEN 'unit_price is null'
    WHEN unit_price IS NULL OR isnan(unit_price) OR isinf(unit_price) THEN 'unit_price is not a number'
    WHEN unit_price < 0 THEN 'unit_price is negative'
    WHEN __raw_quantity IS NOT NULL AND (quantity IS NULL OR isnan(quantity) OR isinf(quantity)) THEN 'quantity is not a number'
    WHEN __raw_returned_quantity IS NOT NULL AND returned_quantity IS NULL THEN 'returned_quantity is not a number'
    WHEN returned_quantity < 0 THEN 'returned_quantity is negative'
    WHEN returned_quantity > greatest(coalesce(quantity, 1), 0) THEN 'returned_quantity exceeds quantity'
    WHEN __raw_unit_cost IS NOT NULL AND (unit_cost IS NULL OR isnan(unit_cost) OR isinf(unit_cost)) THEN 'unit_cost is not a number'
    WHEN unit_cost < 0 THEN 'unit_cost is negative'
    WHEN greatest(unit_price, coalesce(unit_cost, 0)) * abs(coalesce(quantity, 1)) >= 1e13
      THEN 'line value (quantity x unit_price) is 1e13 or more'
    WHEN __raw_order_id IS NOT NULL AND order_id IS NULL THEN 'order_id is not a valid id'
    WHEN __raw_product_id IS NOT NULL AND product_id IS NULL THEN 'product_id is not a valid id'
  END AS reject_reason
FROM orders_typed
