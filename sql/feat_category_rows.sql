-- purpose : the rows of f_category as the category kernel reads them (the top
--           category and the share_<category> columns of the feature table,
--           centile.kernels.categories)
-- grain   : one row per (customer_id, category) of f_category with a net revenue
-- input   : f_category (feat_category.sql, or the refresh state's categories:
--           at most one row per customer and category)
-- params  : none
-- output  : customer_id, code INTEGER (the category's rank by name among
--           f_category's categories, from 0), net_revenue (f_category's exact
--           DECIMAL), net_double DOUBLE (the cast the shares divide)
-- notes   : a NULL net revenue adds nothing to a share and is never the top
--           category, as in a sum with FILTER (WHERE net_revenue > 0): left out.
--           The categories in code order are feat_category_names.sql's rows.
WITH codes AS (
  SELECT category, CAST(row_number() OVER (ORDER BY category) - 1 AS INTEGER) AS code
  FROM (SELECT DISTINCT category FROM f_category WHERE category IS NOT NULL) c
)
SELECT f.customer_id, codes.code, f.net_revenue, CAST(f.net_revenue AS DOUBLE) AS net_double
FROM f_category AS f
JOIN codes USING (category)
WHERE f.net_revenue IS NOT NULL
