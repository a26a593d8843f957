"""The plain DuckDB scripts ``centile bench`` times against centile, each run in a fresh process.

This module imports DuckDB and the standard library only, as the script a user would write
instead of centile does: ``python -c "from centile.bench.baselines import main; main()" KIND SPEC``
with ``KIND`` ``features`` or ``clubs`` and ``SPEC`` a JSON object (input file patterns, threads,
memory limit, output path). It prints one JSON object on its last line.

* ``features``: bare ``GROUP BY customer_id`` scans of the two tables the feature job reads most
  of, timed separately: the order lines (orders, gross and returned revenue, first and last
  order) and the e-mail events (sends, opens, clicks, first and last event).
* ``clubs``: one script from the order lines, products and e-mail events to the club
  memberships: the six default club metrics per customer with the definitions of centile's
  feature SQL (windows before the day after the newest order), then per tier and club, in
  priority order, ``INSERT … ORDER BY metric, tie-breaker, hash(customer_id) LIMIT size`` over
  the eligible customers not yet taken, size ``ceil(share × customers)``; memberships written
  to Parquet.
"""

from __future__ import annotations

import json
import math
import sys
import time
from typing import Any

#: per customer, from the order lines: the order metrics of the default clubs (DOUBLE sums, as a
#: user would write them); one pass per order, then per customer (count of orders, windows by line)
ORDER_METRICS = """
CREATE TEMP TABLE om AS
WITH per_order AS (
  SELECT customer_id, order_id,
         min(order_ts) FILTER (WHERE quantity > 0) AS first_ts,
         coalesce(bool_or(quantity > 0 AND order_ts >= $s12), false) AS in_12m,
         sum(CASE WHEN quantity > 0 THEN quantity * unit_price ELSE 0 END) AS gross_all,
         sum(CASE WHEN quantity > 0 AND order_ts >= $s12 THEN quantity * unit_price ELSE 0 END) AS gross_12m,
         sum(CASE WHEN quantity > 0 THEN returned_quantity * unit_price ELSE -quantity * unit_price END)
           AS returned_all,
         sum(CASE WHEN order_ts < $s12 THEN 0 WHEN quantity > 0 THEN returned_quantity * unit_price
                  ELSE -quantity * unit_price END) AS returned_12m
  FROM lines GROUP BY customer_id, order_id
)
SELECT customer_id, min(first_ts) AS first_ts, count(*) FILTER (WHERE in_12m) AS orders_12m,
       sum(gross_all) AS gross_all, sum(gross_12m) AS gross_12m,
       sum(returned_all) AS returned_all, sum(returned_12m) AS returned_12m
FROM per_order GROUP BY customer_id
"""

#: the highest unit price among items bought in 24 months and kept (a product sent back on
#: negative lines counts only while its net quantity stays positive)
KEPT = """
CREATE TEMP TABLE kept AS
WITH w AS (SELECT customer_id, product_id, unit_price, quantity, returned_quantity
           FROM lines WHERE order_ts >= $s24),
gone AS (
  SELECT customer_id, product_id FROM w
  WHERE (customer_id, product_id) IN (SELECT customer_id, product_id FROM w WHERE quantity < 0)
  GROUP BY ALL
  HAVING sum(CASE WHEN quantity > 0 THEN quantity - returned_quantity ELSE quantity END) <= 0
)
SELECT customer_id, max(unit_price) AS max_price_kept_24m
FROM w ANTI JOIN gone USING (customer_id, product_id)
WHERE quantity > 0 AND quantity - returned_quantity > 0
GROUP BY customer_id
"""

PREMIUM = """
CREATE TEMP TABLE premium AS
SELECT o.customer_id,
       sum((o.unit_price - coalesce(o.unit_cost, p.unit_cost, 0))
           * CASE WHEN o.quantity > 0 THEN o.quantity - o.returned_quantity ELSE o.quantity END)
         AS premium_margin_12m
FROM lines o JOIN products p USING (product_id)
WHERE o.order_ts >= $s12 AND p.market_price < o.unit_price
GROUP BY o.customer_id
"""

#: an e-mail is one (customer, campaign), in the window when its first send is
EMAIL = """
CREATE TEMP TABLE em AS
WITH keyed AS (
  SELECT customer_id, min(ts) FILTER (WHERE event = 'sent') AS sent_ts,
         bool_or(event IN ('open', 'click')) AS opened, bool_or(event = 'click') AS clicked
  FROM events WHERE ts < $as_of_ts AND campaign_id IS NOT NULL
  GROUP BY customer_id, campaign_id
)
SELECT customer_id, count(*) FILTER (WHERE sent_ts >= $s12) AS sent,
       count(*) FILTER (WHERE sent_ts >= $s12 AND opened) AS opened,
       count(*) FILTER (WHERE sent_ts >= $s12 AND clicked) AS clicked
FROM keyed GROUP BY customer_id
"""


def _connect(spec: dict[str, Any]) -> Any:
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")  # no bar on stdout, which carries the result
    if spec.get("threads"):
        con.execute(f"SET threads = {int(spec['threads'])}")
    if spec.get("memory_limit"):
        con.execute("SET memory_limit = '" + str(spec["memory_limit"]).replace("'", "") + "'")
    return con


def source_sql(spec: dict[str, Any], table: str) -> str | None:
    """``read_parquet([...])`` or ``read_csv([...])`` over the table's files, or None when absent."""
    t = spec["tables"].get(table)
    if not t:
        return None
    files = "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in t["patterns"]) + "]"
    return f"read_csv({files}, union_by_name = true)" if t["format"] == "csv" else f"read_parquet({files})"


def features_scans(spec: dict[str, Any]) -> dict[str, Any]:
    """Bare ``GROUP BY customer_id`` scans of the order lines and the e-mail events, timed apart."""
    con = _connect(spec)
    out: dict[str, Any] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    con.execute(f"""
      CREATE TABLE f AS
      SELECT customer_id, count(DISTINCT order_id) AS orders,
             sum(CASE WHEN quantity > 0 THEN quantity * unit_price END) AS gross,
             sum(returned_quantity * unit_price) AS returned,
             min(order_ts) AS first_ts, max(order_ts) AS last_ts
      FROM {source_sql(spec, 'orders')} GROUP BY customer_id""")
    out["orders_s"] = time.perf_counter() - t0
    out["orders_cpu_s"] = time.process_time() - c0  # every thread of this process
    out["order_customers"] = con.execute("SELECT count(*) FROM f").fetchone()[0]
    events = source_sql(spec, "email_events")
    if events is not None:
        t0, c0 = time.perf_counter(), time.process_time()
        con.execute(f"""
          CREATE TABLE e AS
          SELECT customer_id, count(*) FILTER (WHERE event = 'sent') AS sent,
                 count(*) FILTER (WHERE event = 'open') AS opens,
                 count(*) FILTER (WHERE event = 'click') AS clicks,
                 min(ts) AS first_ts, max(ts) AS last_ts
          FROM {events} GROUP BY customer_id""")
        out["email_events_s"] = time.perf_counter() - t0
        out["email_events_cpu_s"] = time.process_time() - c0
    else:
        out["email_events_s"] = out["email_events_cpu_s"] = None
    out["seconds"] = out["orders_s"] + (out["email_events_s"] or 0.0)
    out["cpu_s"] = out["orders_cpu_s"] + (out["email_events_cpu_s"] or 0.0)
    return out


def clubs_script(spec: dict[str, Any]) -> dict[str, Any]:
    """The six club metrics from the raw tables, then overlap-free clubs by ``ORDER BY … LIMIT``."""
    import datetime as dt

    t0 = time.perf_counter()
    con = _connect(spec)
    con.execute(f"CREATE TEMP VIEW lines AS SELECT * FROM {source_sql(spec, 'orders')}")
    events, products, customers = (source_sql(spec, t) for t in ("email_events", "products", "customers"))
    if events is not None:
        con.execute(f"CREATE TEMP VIEW events AS SELECT * FROM {events}")
    if products is not None:
        con.execute(f"CREATE TEMP VIEW products AS SELECT * FROM {products}")
    as_of = con.execute("SELECT CAST(max(order_ts) AS DATE) + 1 FROM lines").fetchone()[0]
    as_of_ts = dt.datetime.combine(as_of, dt.time())
    p = {"s12": as_of_ts - dt.timedelta(days=365), "s24": as_of_ts - dt.timedelta(days=730)}
    con.execute(ORDER_METRICS, {"s12": p["s12"]})
    con.execute(KEPT, {"s24": p["s24"]})
    if products is not None:
        con.execute(PREMIUM, {"s12": p["s12"]})
    if events is not None:
        con.execute(EMAIL, {"s12": p["s12"], "as_of_ts": as_of_ts})
    ids = ["SELECT customer_id FROM om"]
    if customers is not None:
        ids.append(f"SELECT customer_id FROM {customers}")
    if events is not None:
        ids.append("SELECT customer_id FROM events WHERE ts < $as_of_ts")
    premium = "coalesce(p.premium_margin_12m, 0)" if products is not None else "NULL::DOUBLE"
    sent = "coalesce(e.sent, 0)" if events is not None else "NULL::BIGINT"
    email_join = "LEFT JOIN em e USING (customer_id)" if events is not None else ""
    email_cols = ("e.opened / nullif(e.sent, 0) AS open_rate_12m, e.clicked / nullif(e.sent, 0) AS click_rate_12m"
                  if events is not None else "NULL::DOUBLE AS open_rate_12m, NULL::DOUBLE AS click_rate_12m")
    con.execute(f"""
      CREATE TEMP TABLE m AS
      SELECT u.customer_id,
             coalesce(o.orders_12m, 0) AS orders_12m,
             coalesce(o.gross_12m, 0) - coalesce(o.returned_12m, 0) AS net_revenue_12m,
             coalesce(o.returned_12m, 0) AS returned_value_12m,
             coalesce(o.gross_all, 0) - coalesce(o.returned_all, 0) AS net_revenue_lifetime,
             date_diff('day', CAST(o.first_ts AS DATE), $as_of) AS tenure_days,
             k.max_price_kept_24m,
             {premium} AS premium_margin_12m,
             {sent} AS emails_sent_12m, {email_cols}
      FROM (SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(ids)})) u
      LEFT JOIN om o USING (customer_id)
      LEFT JOIN kept k USING (customer_id)
      {"LEFT JOIN premium p USING (customer_id)" if products is not None else ""}
      {email_join}""", {"as_of": as_of, **({"as_of_ts": as_of_ts} if events is not None else {})})
    n = con.execute("SELECT count(*) FROM m").fetchone()[0]
    con.execute("CREATE TEMP TABLE taken (customer_id BIGINT PRIMARY KEY, club VARCHAR, tier INTEGER)")
    clubs = [c for c in spec["clubs"]
             if con.execute(f"SELECT count({c['metric']}) FROM m").fetchone()[0] > 0]
    tiers = max((len(c["shares"]) for c in clubs), default=0)
    for t in range(tiers):
        for c in clubs:
            if t >= len(c["shares"]):
                continue
            size = math.ceil(round(c["shares"][t] * n, 9))
            sign = "ASC" if c["direction"] == "asc" else "DESC"
            order = ", ".join([f"{c['metric']} {sign}"] + [f"{tb} {sign} NULLS LAST" for tb in c["tie_break"]]
                              + ["hash(customer_id)"])
            elig = f"({c['eligible']}) AND " if c["eligible"] else ""
            con.execute(f"""
              INSERT INTO taken
              SELECT customer_id, '{c['name']}', {t + 1} FROM m
              WHERE {elig}{c['metric']} IS NOT NULL
                AND customer_id NOT IN (SELECT customer_id FROM taken)
              ORDER BY {order} LIMIT {size}""")
    out = spec["out"].replace("'", "''")
    con.execute(f"COPY taken TO '{out}' (FORMAT parquet)")
    seconds = time.perf_counter() - t0
    doc = {"seconds": seconds, "customers": n,
           "members": con.execute("SELECT count(*) FROM taken").fetchone()[0], "clubs": [c["name"] for c in clubs]}
    if spec.get("metrics_out"):  # for the agreement check, after the clock stopped
        con.execute("COPY m TO '" + spec["metrics_out"].replace("'", "''") + "' (FORMAT parquet)")
    return doc


def main(argv: list[str] | None = None) -> None:
    """``KIND SPEC``: run one baseline and print its JSON result on the last line of stdout."""
    argv = sys.argv[1:] if argv is None else argv
    kind, spec = argv[0], json.loads(argv[1])
    run = {"features": features_scans, "clubs": clubs_script}[kind]
    print(json.dumps(run(spec)))
