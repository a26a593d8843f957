-- purpose : incremental refresh state: all-time money and row counts per customer
--           (kept when the day buckets are pruned; the customer universe)
-- grain   : one row per customer_id
-- input   : batch_orders, batch_email (a batch's valid e-mail events)
-- params  : none
-- output  : customer_id, gross DECIMAL(38,4), returned DECIMAL(38,4), lines BIGINT,
--           events BIGINT, __bucket
SELECT customer_id,
       CAST(sum(gross) AS DECIMAL(38, 4)) AS gross,
       CAST(sum(returned) AS DECIMAL(38, 4)) AS returned,
       CAST(sum(lines) AS BIGINT) AS lines,
       CAST(sum(events) AS BIGINT) AS events,
       any_value(__bucket) AS __bucket
FROM (
  SELECT customer_id,
         CASE WHEN quantity > 0 THEN (quantity * unit_price)::DECIMAL(18, 4) ELSE 0 END AS gross,
         CASE WHEN quantity > 0 THEN (returned_quantity * unit_price)::DECIMAL(18, 4)
              ELSE (-quantity * unit_price)::DECIMAL(18, 4) END AS returned,
         1 AS lines, 0 AS events, __bucket
  FROM batch_orders
  UNION ALL
  SELECT customer_id, 0, 0, 0, 1, __bucket FROM batch_email
) t
GROUP BY customer_id
