-- purpose : the customer feature table (features.parquet)
-- grain   : one row per customer of the universe (the engine sorts by customer_id)
-- input   : universe, f_orders, f_kept, f_premium, f_email, f_channel, f_category
-- params  : $as_of (DATE); $has_premium, $has_email (BOOLEAN: is the source
--           table available? if not the feature is NULL, never zero-filled)
-- output  : see the casts below: the schema is a contract
SELECT
  u.customer_id,
  CAST(date_diff('day', CAST(o.last_order_ts AS DATE), $as_of) AS INTEGER) AS recency_days,
  CAST(o.first_order_ts AS TIMESTAMP) AS first_order_ts,
  CAST(o.last_order_ts AS TIMESTAMP) AS last_order_ts,
  CAST(date_diff('day', CAST(o.first_order_ts AS DATE), $as_of) AS INTEGER) AS tenure_days,
  CAST(coalesce(o.orders_6m, 0) AS INTEGER) AS orders_6m,
  CAST(coalesce(o.orders_12m, 0) AS INTEGER) AS orders_12m,
  CAST(coalesce(o.orders_total, 0) AS INTEGER) AS orders_total,
  CAST(coalesce(o.gross_12m, 0) AS DOUBLE) AS gross_revenue_12m,
  CAST(coalesce(o.returned_12m, 0) AS DOUBLE) AS returned_value_12m,
  CAST(coalesce(o.gross_12m, 0) - coalesce(o.returned_12m, 0) AS DOUBLE) AS net_revenue_12m,
  CAST(coalesce(o.gross_all, 0) AS DOUBLE) AS gross_revenue_lifetime,
  CAST(coalesce(o.returned_all, 0) AS DOUBLE) AS returned_value_lifetime,
  CAST(coalesce(o.gross_all, 0) - coalesce(o.returned_all, 0) AS DOUBLE) AS net_revenue_lifetime,
  CAST(o.gross_12m / nullif(o.orders_12m, 0) AS DOUBLE) AS avg_order_value_12m,
  CAST(o.returned_12m / nullif(o.gross_12m, 0) AS DOUBLE) AS return_rate_12m,
  CAST(k.max_price_kept_24m AS DOUBLE) AS max_price_kept_24m,
  CAST(CASE WHEN $has_premium THEN coalesce(p.premium_margin_12m, 0) END AS DOUBLE) AS premium_margin_12m,
  CAST(CASE WHEN $has_email THEN coalesce(e.emails_sent_12m, 0) END AS INTEGER) AS emails_sent_12m,
  CAST(e.opened_12m / nullif(e.emails_sent_12m, 0) AS DOUBLE) AS open_rate_12m,
  CAST(e.clicked_12m / nullif(e.emails_sent_12m, 0) AS DOUBLE) AS click_rate_12m,
  CAST(c.preferred_channel AS VARCHAR) AS preferred_channel
FROM universe AS u
LEFT JOIN f_orders AS o USING (customer_id)
LEFT JOIN f_kept AS k USING (customer_id)
LEFT JOIN f_premium AS p USING (customer_id)
LEFT JOIN f_email AS e USING (customer_id)
LEFT JOIN f_channel AS c USING (customer_id)
