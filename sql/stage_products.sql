-- purpose : validate the product table (an audit, see stage_orders.sql)
-- grain   : one row per source product row
-- input   : products_typed
-- params  : none
-- output  : every column of products_typed, reject_reason VARCHAR (NULL = valid)
-- notes   : product_id is a key: every row of a duplicated id is set aside,
--           since which of them is right cannot be known.
SELECT *,
  CASE
    WHEN __raw_product_id IS NULL THEN 'product_id is null'
    WHEN product_id IS NULL THEN 'product_id is not a valid id'
    WHEN count(*) OVER (PARTITION BY product_id) > 1 THEN 'duplicate product_id'
    WHEN __raw_list_price IS NOT NULL AND list_price IS NULL THEN 'list_price is not a number'
    WHEN list_price < 0 THEN 'list_price is negative'
    WHEN __raw_market_price IS NOT NULL AND market_price IS NULL THEN 'market_price is not a number'
    WHEN market_price < 0 THEN 'market_price is negative'
    WHEN __raw_unit_cost IS NOT NULL AND (unit_cost IS NULL OR isnan(unit_cost) OR isinf(unit_cost)) THEN 'unit_cost is not a number'
    WHEN unit_cost >= 1e13 THEN 'unit_cost is 1e13 or more'
    WHEN unit_cost < 0 THEN 'unit_cost is negative'
  END AS reject_reason
FROM products_typed
