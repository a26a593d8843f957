-- purpose : buy-till-you-die summary per customer (frequency, recency, T, mean
--           repeat spend) for a calibration period, plus holdout counts
-- grain   : one row per customer whose first purchase day is on or before $cal_end
-- input   : orders (valid lines before as_of)
-- params  : $cal_end DATE (last day of the calibration period, included),
--           $hold_end DATE (last day of the holdout period; equal to $cal_end
--           when there is none), $unit DOUBLE (days per time unit: 1 or 7)
-- output  : customer_id, frequency DOUBLE (repeat transactions), recency DOUBLE
--           (last minus first transaction day, in units), T DOUBLE (calibration
--           end minus first transaction day, in units), monetary_value DOUBLE
--           (mean value of the repeat transactions; NULL without any),
--           first_purchase DATE, holdout_transactions BIGINT, holdout_value DOUBLE
-- notes   : a transaction is a purchase day: every line with positive quantity
--           of a customer on one day is one transaction; its value is the kept
--           value, (quantity - returned_quantity) x unit_price. Return lines
--           (negative quantity) are not transactions.
WITH days AS (
  SELECT customer_id,
         CAST(order_ts AS DATE) AS day,
         -- DECIMAL: exact sums, the same bytes whatever order parallel threads add in
         sum(((quantity - returned_quantity) * unit_price)::DECIMAL(18, 4)) AS value
  FROM orders
  WHERE quantity > 0 AND CAST(order_ts AS DATE) <= $hold_end
  GROUP BY customer_id, CAST(order_ts AS DATE)
),
marked AS (
  SELECT *, min(day) OVER (PARTITION BY customer_id) AS first_day FROM days
)
SELECT
  customer_id,
  CAST(count(*) FILTER (WHERE day <= $cal_end) - 1 AS DOUBLE) AS frequency,
  CAST(date_diff('day', min(first_day), max(day) FILTER (WHERE day <= $cal_end)) AS DOUBLE) / $unit AS recency,
  CAST(date_diff('day', min(first_day), $cal_end) AS DOUBLE) / $unit AS T,
  CAST(avg(value) FILTER (WHERE day <= $cal_end AND day > first_day) AS DOUBLE) AS monetary_value,
  min(first_day) AS first_purchase,
  CAST(count(*) FILTER (WHERE day > $cal_end) AS BIGINT) AS holdout_transactions,
  CAST(coalesce(sum(value) FILTER (WHERE day > $cal_end), 0) AS DOUBLE) AS holdout_value
FROM marked
GROUP BY customer_id
HAVING min(first_day) <= $cal_end
