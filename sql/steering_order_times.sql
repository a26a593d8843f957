-- purpose : the times a customer ordered (steering_responses.sql reads them as
--           `order_times`)
-- grain   : one row per customer_id, order_ts of a line with positive quantity
-- input   : orders
-- params  : none
-- output  : customer_id, order_ts TIMESTAMP
-- notes   : return lines (negative quantity) are no response. The refresh state keeps
--           the same set (refresh_steering_times.sql), whole: a contact of any time
--           before as_of may be answered.
SELECT DISTINCT customer_id, order_ts FROM orders WHERE quantity > 0
