"""sql/feat_email.sql (campaign bits OR-ed per customer and word of 64 campaigns) against the
plain query with one group per e-mail (customer, campaign), on events over many campaigns."""

import datetime as dt

import duckdb
import pytest

from centile.io.sqlfiles import read_sql

#: one group per (customer, campaign): the flags of each e-mail, then per customer
PER_EMAIL = """
WITH keyed AS (
  SELECT customer_id,
         bit_or(CASE event WHEN 'sent' THEN CASE WHEN ts >= $s12 THEN 2 ELSE 1 END
                           WHEN 'open' THEN 4 ELSE 12 END::UTINYINT) AS flags
  FROM email_events
  WHERE ts < CAST($as_of AS TIMESTAMP) AND campaign_id IS NOT NULL
  GROUP BY customer_id, campaign_id
),
per_customer AS (
  SELECT customer_id,
         count(*) FILTER (WHERE flags & 3 = 2) AS sent,
         count(*) FILTER (WHERE flags & 3 = 2 AND flags & 4 = 4) AS opened,
         count(*) FILTER (WHERE flags & 3 = 2 AND flags & 8 = 8) AS clicked
  FROM keyed
  GROUP BY customer_id
  UNION ALL
  SELECT customer_id,
         count(*) FILTER (WHERE event = 'sent' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'open' AND ts >= $s12),
         count(*) FILTER (WHERE event = 'click' AND ts >= $s12)
  FROM email_events
  WHERE ts < CAST($as_of AS TIMESTAMP) AND campaign_id IS NULL
  GROUP BY customer_id
)
SELECT customer_id,
       sum(sent) AS emails_sent_12m,
       least(sum(opened), sum(sent)) AS opened_12m,
       least(sum(clicked), sum(sent)) AS clicked_12m
FROM per_customer
GROUP BY customer_id
"""


@pytest.mark.parametrize(("campaigns", "id_type"), [(1, "BIGINT"), (64, "BIGINT"), (65, "BIGINT"),
                                                     (300, "BIGINT"), (150, "VARCHAR")])
def test_feat_email_equals_one_group_per_email(campaigns, id_type):
    con = duckdb.connect()
    con.execute("SELECT setseed(0.5)")
    # 400 customers, events spread over three years around the window start and past as_of; a
    # campaign sent twice to some (before and in the window), opens and clicks without a send, and
    # events without campaign
    con.execute(f"""
        CREATE TABLE email_events AS
        SELECT (random() * 400)::BIGINT AS customer_id,
               CASE WHEN random() < 0.05 THEN NULL
                    ELSE CAST((random() * {campaigns - 1})::BIGINT * 7 AS {id_type}) END AS campaign_id,
               TIMESTAMP '2022-01-01' + to_seconds((random() * 3 * 365 * 86400)::BIGINT) AS ts,
               CAST(['sent', 'sent', 'open', 'click'][1 + floor(random() * 4)::INTEGER]
                    AS ENUM ('sent', 'open', 'click')) AS event
        FROM range(20000)""")
    params = {"as_of": dt.date(2024, 7, 1), "s12": dt.datetime(2023, 7, 2)}
    got = con.execute(f"SELECT * FROM ({read_sql('feat_email')}) ORDER BY customer_id", params).fetchall()
    want = con.execute(f"SELECT * FROM ({PER_EMAIL}) ORDER BY customer_id", params).fetchall()
    assert got == want
    assert sum(r[1] for r in want) > 0 and sum(r[2] for r in want) > 0 and sum(r[3] for r in want) > 0
    assert con.execute(f"SELECT typeof(emails_sent_12m), typeof(opened_12m) FROM ({read_sql('feat_email')}) "
                       "LIMIT 1", params).fetchall() == [("HUGEINT", "HUGEINT")]
