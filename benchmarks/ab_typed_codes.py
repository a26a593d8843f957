"""A/B of the typed order table: category and channel as VARCHAR (main: the typed text, the null
strings read as NULL) against ENUM codes (TRY_CAST of the source text to an ENUM of the sorted
distinct texts that are not null strings, found by one DISTINCT pass over the source columns), as
``centile.backend.sources.CODED`` now stores them.

    python benchmarks/ab_typed_codes.py THREADS   (over bench-data/c1000000)

Builds both tables in one process over one validated session, alternating 3 times, then runs the
queries that read the columns (order_facts, feat_channel, feat_category) over each; prints CPU
seconds per step and their medians, and the rows that differ between the two (0: identical).
The figures are ``typed_codes_ab`` in ``benchmarks/results/feature_phases.json``.
"""
import json
import os
import statistics
import sys
import time

from centile.backend.session import _orders_view, open_session
from centile.backend.sources import _null_text
from centile.config import load_config
from centile.features.compute import FEATURE_TABLES, run_sql, window_params
from centile.io.sqlfiles import literal

threads = int(sys.argv[1])
cfg = load_config(data="bench-data/c1000000", threads=threads)
cpu = time.process_time
out = {"main": [], "enum": []}
loads = [os.getloadavg()[0]]
with open_session(cfg, None, only=FEATURE_TABLES) as s:
    con = s.con
    params = window_params(s)
    reg = s.tables["orders"]
    cols = list(reg.columns)
    texts = ("category", "channel")
    # the staged view with the raw text as well
    con.execute("CREATE OR REPLACE TEMP VIEW orders_typed2 AS SELECT *, " + ", ".join(f"CAST({reg.columns[c].raw_sql} AS VARCHAR) AS __text_{c}" for c in texts) + " FROM orders_typed")
    def build(kind):
        c0 = cpu()
        if kind == "main":
            sel, d = ", ".join(cols), 0.0
            con.execute(f"CREATE OR REPLACE TEMP TABLE v_{kind} AS SELECT {sel} FROM orders_staged WHERE reject_reason IS NULL")
        else:
            lists = con.execute("SELECT " + ", ".join(f"list(DISTINCT CAST({reg.columns[c].raw_sql} AS VARCHAR))" for c in texts) + " FROM src_orders").fetchall()[0]
            enums = {}
            for c, vals in zip(texts, lists, strict=True):
                keep = con.execute(f"SELECT list_sort(list(v)) FROM unnest($l) t(v) WHERE {_null_text(reg.spec, 'v')} IS NOT NULL", {"l": vals}).fetchall()[0][0] or []
                enums[c] = "ENUM(" + ", ".join(literal(v) for v in keep) + ")"
            d = cpu() - c0
            sel = ", ".join(f"TRY_CAST(__text_{c} AS {enums[c]}) AS {c}" if c in texts else c for c in cols)
            con.execute(f"CREATE OR REPLACE TEMP TABLE v_{kind} AS SELECT {sel} FROM (SELECT *, " + read_stage + ") WHERE reject_reason IS NULL")
        return {"distinct_values": round(d, 2), "typed_table": round(cpu() - c0 - d, 2)}
    from centile.io.sqlfiles import read_sql
    stage = read_sql("stage_orders").replace("FROM orders_typed", "FROM orders_typed2")
    # the staged rows with the text columns: stage_orders.sql over orders_typed2 (SELECT * keeps __text_*)
    con.execute(f"CREATE OR REPLACE TEMP VIEW staged2 AS {stage}")
    read_stage = "1 AS __x FROM staged2"
    def queries(kind):
        _orders_view(con, s, source=f"v_{kind}")
        r = {}
        for name, table in (("order_facts", "order_facts"), ("feat_channel", "f_channel"), ("feat_category", "f_category")):
            c0 = cpu()
            run_sql(s, name, params, table=f"{table}_{kind}" if name != "order_facts" else table)
            r[name] = round(cpu() - c0, 2)
        return r
    for i in range(3):
        for kind in (("main", "enum") if i % 2 == 0 else ("enum", "main")):
            r = {**build(kind), **queries(kind)}
            r["total"] = round(sum(r.values()), 2)
            out[kind].append(r)
            print(kind, r, flush=True)
            loads.append(os.getloadavg()[0])
    diff = con.execute("SELECT (SELECT count(*) FROM (SELECT * FROM v_main EXCEPT SELECT * REPLACE (CAST(category AS VARCHAR) AS category, CAST(channel AS VARCHAR) AS channel) FROM v_enum)), "
                       "(SELECT count(*) FROM (SELECT customer_id, preferred_channel FROM f_channel_main EXCEPT "
                       "SELECT customer_id, CAST(preferred_channel AS VARCHAR) FROM f_channel_enum)), "
                       "(SELECT count(*) FROM (SELECT * FROM f_category_main EXCEPT "
                       "SELECT customer_id, CAST(category AS VARCHAR), net_revenue FROM f_category_enum))").fetchall()[0]
    print(con.execute("DESCRIBE v_enum").fetchall())
res = {"threads": threads, "cpu_s": out,
       "median": {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in out.items()},
       "rows_differing": {"orders_valid": diff[0], "f_channel": diff[1], "f_category": diff[2]},
       "load_average_1m": [round(min(loads), 2), round(max(loads), 2)]}
print(json.dumps(res))
