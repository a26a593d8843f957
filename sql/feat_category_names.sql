-- purpose : the categories of f_category in code order (feat_category_rows.sql)
-- grain   : one row per category
-- input   : f_category
-- params  : none
-- output  : category VARCHAR, ordered by name
SELECT DISTINCT category FROM f_category WHERE category IS NOT NULL ORDER BY category
