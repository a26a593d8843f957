-- purpose : buy-till-you-die summary per customer (frequency, recency, T, mean
--           repeat spend) for a calibration period, plus holdout counts
-- grain   : one row per customer whose first purchase day is on or before $cal_end
-- input   : days (purchase days: customer_id, day, value DECIMAL; clv_days.sql
--           over the orders, or the refresh state's purchases table), given as a
--           CTE by the caller (centile.clv.compute.summary_sql)
-- params  : $cal_end DATE (last day of the calibration period, included),
--           $hold_end DATE (last day of the holdout period; equal to $cal_end
--           when there is none; days holds no later day), $unit DOUBLE (days
--           per time unit: 1 or 7)
-- output  : customer_id, frequency DOUBLE (repeat transactions), recency DOUBLE
--           (last minus first transaction day, in units), T DOUBLE (calibration
--           end minus first transaction day, in units), monetary_value DOUBLE
--           (mean value of the repeat transactions; NULL without any),
--           first_purchase DATE, holdout_transactions BIGINT, holdout_value DOUBLE
-- notes   : a transaction is a purchase day (clv_days.sql).
WITH marked AS (
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
