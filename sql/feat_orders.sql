-- purpose : order counts, dates and revenue per customer
-- grain   : one row per customer with at least one valid order line
-- input   : order_facts (see order_facts.sql)
-- params  : none
-- output  : customer_id, first_order_ts, last_order_ts, orders_6m, orders_12m,
--           orders_total (distinct orders with a positive-quantity line),
--           gross_12m, returned_12m, gross_all, returned_all
SELECT
  customer_id,
  min(first_ts) AS first_order_ts,
  max(last_ts) AS last_order_ts,
  count(*) FILTER (WHERE in_6m) AS orders_6m,
  count(*) FILTER (WHERE in_12m) AS orders_12m,
  count(first_ts) AS orders_total,
  sum(gross_12m) AS gross_12m,
  sum(returned_12m) AS returned_12m,
  sum(gross_all) AS gross_all,
  sum(returned_all) AS returned_all
FROM order_facts
GROUP BY customer_id
