"""Issue 12 §4: the one-pass validation and the fused e-mail aggregation on dirty inputs.

The e-mail events stay a view over the Parquet file and feat_email folds each e-mail into one
flag byte; the order lines are validated in one typed pass with the rejects taken in a second
pass. These tests put rejects, duplicate lines, odd event spellings and events without a
campaign into generated data and check the e-mail features against plain Python, and the
features and rejects for equality across partition and thread counts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections import defaultdict

import duckdb
import pytest

from centile.backend import sources
from centile.backend.session import open_session
from centile.config import load_config
from centile.features.compute import FEATURE_TABLES, compute_features, window_params, write_rejects
from centile.synth import generate

NULLS = ("", "NULL", "null", "NA", "N/A")
SPELLINGS = {"sent": "sent", "send": "sent", "delivered": "sent", "open": "open", "opened": "open",
             "click": "click", "clicked": "click"}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty")
    generate(root / "clean", 1_500, seed=21)
    out = root / "data"
    (out / "orders").mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SELECT setseed(0.25)")
    for name in ("products", "customers"):
        con.execute(f"COPY (SELECT * FROM '{root}/clean/{name}.parquet') TO '{out}/{name}.parquet'")
    # duplicate lines (a sample copied), guest lines, negative prices, returns above the quantity,
    # blank and padded channels, channels and categories in capitals or with accents (they sort
    # before or after the others), categories read as NULL
    con.execute(f"""COPY (
      SELECT * REPLACE (
        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id,
        CASE WHEN random() < 0.01 THEN -unit_price ELSE unit_price END AS unit_price,
        CASE WHEN random() < 0.01 THEN quantity + 1 ELSE returned_quantity END AS returned_quantity,
        CASE WHEN random() < 0.03 THEN 'NULL' WHEN random() < 0.03 THEN ' ' || channel
             WHEN random() < 0.03 THEN upper(channel) WHEN random() < 0.01 THEN 'tél' ELSE channel END AS channel,
        CASE WHEN random() < 0.02 THEN ' N/A' WHEN random() < 0.02 THEN upper(category)
             WHEN random() < 0.01 THEN 'électronique' ELSE category END AS category)
      FROM (SELECT * FROM '{root}/clean/orders/*.parquet'
            UNION ALL (SELECT * FROM '{root}/clean/orders/*.parquet' USING SAMPLE 2 PERCENT (bernoulli, 7)))
      ORDER BY customer_id, order_id) TO '{out}/orders/part-0.parquet'""")
    con.execute(f"""COPY (
      SELECT * REPLACE (
        CASE WHEN random() < 0.03 THEN upper(event) WHEN random() < 0.03 THEN ' ' || event || 'ed '
             WHEN random() < 0.01 THEN 'bounce' WHEN random() < 0.01 THEN 'N/A' ELSE event END AS event,
        CASE WHEN random() < 0.05 THEN NULL ELSE campaign_id END AS campaign_id,
        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id)
      FROM (SELECT * FROM '{root}/clean/email_events.parquet'
            -- e-mails sent again: a first send 400 days earlier (out of the window when the
            -- later one is in it), or a second send a day later
            UNION ALL SELECT * REPLACE (ts - INTERVAL 400 DAY AS ts) FROM '{root}/clean/email_events.parquet'
              WHERE event = 'sent' AND hash(customer_id, campaign_id) % 7 = 0
            UNION ALL SELECT * REPLACE (ts + INTERVAL 1 DAY AS ts) FROM '{root}/clean/email_events.parquet'
              WHERE event = 'sent' AND hash(customer_id, campaign_id) % 11 = 0)
      ORDER BY customer_id, ts) TO '{out}/email_events.parquet'""")
    return out


def _event(raw: str | None) -> str | None:
    if raw is None or raw.strip(" ") in NULLS:
        return None
    return SPELLINGS.get(raw.strip(" ").lower())


def test_email_features_equal_a_slow_reference_on_dirty_events(dirty):
    cfg = load_config(data=dirty)
    with open_session(cfg, only=FEATURE_TABLES) as s:
        df = compute_features(s)[0]
        p = window_params(s)
        rejected = s.summaries["email_events"].rejects
    as_of = dt.datetime.combine(p["as_of"], dt.time())
    raw = duckdb.connect().execute(f"SELECT customer_id, campaign_id, ts, event FROM '{dirty}/email_events.parquet'"
                                   ).fetchall()
    keyed: dict = defaultdict(lambda: [None, False, False])
    loose: dict = defaultdict(lambda: [0, 0, 0])
    bad = 0
    for cid, camp, ts, event in raw:
        ev = _event(event)
        if cid is None or ts is None or ev is None:
            bad += 1
            continue
        if ts >= as_of:
            continue
        if camp is None:
            if ts >= p["s12"]:
                loose[cid][("sent", "open", "click").index(ev)] += 1
            continue
        k = keyed[(cid, camp)]
        if ev == "sent":
            k[0] = ts if k[0] is None else min(k[0], ts)
        k[1] |= ev in ("open", "click")
        k[2] |= ev == "click"
    want: dict = defaultdict(lambda: [0, 0, 0])
    for (cid, _camp), (sent_ts, opened, clicked) in keyed.items():
        w = want[cid]
        if sent_ts is not None and sent_ts >= p["s12"]:
            w[0] += 1
            w[1] += opened
            w[2] += clicked
    for cid, (n_sent, n_open, n_click) in loose.items():
        w = want[cid]
        w[0] += n_sent
        w[1] += n_open
        w[2] += n_click
    assert bad == sum(rejected.values()) > 0
    assert loose and any(w[0] for w in want.values())
    got = {r["customer_id"]: r for r in df.select("customer_id", "emails_sent_12m", "open_rate_12m",
                                                      "click_rate_12m").iter_rows(named=True)}
    for cid in set(keyed_c for keyed_c, _ in keyed) | set(loose):
        sent, opened, clicked = want[cid]
        row = got[cid]
        assert row["emails_sent_12m"] == sent, cid
        assert row["open_rate_12m"] == (min(opened, sent) / sent if sent else None), cid
        assert row["click_rate_12m"] == (min(clicked, sent) / sent if sent else None), cid


def test_dirty_inputs_give_the_same_features_and_rejects_at_any_partition_and_thread_count(dirty, tmp_path):
    runs = {}
    for parts, threads in ((1, 1), (3, 2), (1, 2)):
        cfg = load_config(data=dirty, partitions=parts, threads=threads)
        with open_session(cfg, only=FEATURE_TABLES) as s:
            df = compute_features(s)[0]
            path = tmp_path / f"rejects_{parts}_{threads}.parquet"
            write_rejects(s, path)
            reasons = {n: dict(sorted(t.rejects.items())) for n, t in s.summaries.items()}
        runs[(parts, threads)] = (df, hashlib.sha256(path.read_bytes()).hexdigest(), reasons)
    (one, rejects, reasons), *others = runs.values()
    assert reasons["orders"].get("duplicate line", 0) > 0 and reasons["email_events"]
    for df, digest, why in others:
        assert df.equals(one, null_equal=True)
        assert digest == rejects
        assert why == reasons


def _features_and_rejects(cfg, path):
    with open_session(cfg, only=FEATURE_TABLES) as s:
        df = compute_features(s)[0]
        write_rejects(s, path)
        kinds = {t: sources.is_table(s.con, t) for t in ("orders_valid", "orders_rejects")}
        return df, path.read_bytes(), s.summaries["orders"].as_dict(), s.lines_after_as_of, kinds


@pytest.mark.parametrize("keep", [False, True])
def test_order_lines_read_as_a_view_give_the_same_features_rejects_and_summary(dirty, tmp_path, monkeypatch, keep):
    """Order lines too large for DuckDB's memory share stay a view over the files (VIEW_SHARE 0:
    always); with duplicate lines to set aside they become a table. Features, rejects and the
    summary are the same as from the materialised lines, also with duplicates kept and an as_of
    that leaves lines after it."""
    cfg = load_config(data=dirty, threads=2, memory_limit="4GB", as_of="2025-06-01")
    if keep:
        cfg = dataclasses.replace(cfg, tables={**cfg.tables,
                                               "orders": dataclasses.replace(cfg.tables["orders"], duplicates="keep")})
    table, view = _as_table_then_as_view(cfg, tmp_path, monkeypatch)
    # duplicates are found in both runs: the view is materialised to set them aside (or count them)
    assert view[4] == {"orders_valid": True, "orders_rejects": True}


def test_clean_order_lines_stay_a_view(tmp_path, monkeypatch):
    """Without rejects or duplicates the lines are never copied into a table, and the features
    are those of the materialised lines."""
    generate(tmp_path / "d", 400, seed=5)
    cfg = load_config(data=tmp_path / "d", threads=1, memory_limit="4GB", as_of="2025-06-01")
    _table, view = _as_table_then_as_view(cfg, tmp_path, monkeypatch)
    assert view[4] == {"orders_valid": False, "orders_rejects": False}


def _as_table_then_as_view(cfg, tmp_path, monkeypatch):
    """Features, rejects and summary from the materialised lines, then with the lines a view
    (VIEW_SHARE 0); asserts they are the same, with lines after as_of."""
    table = _features_and_rejects(cfg, tmp_path / "table.parquet")
    monkeypatch.setattr(sources, "VIEW_SHARE", 0.0)
    view = _features_and_rejects(cfg, tmp_path / "view.parquet")
    assert table[4] == {"orders_valid": True, "orders_rejects": True}
    assert view[0].equals(table[0], null_equal=True)
    assert view[1:4] == table[1:4]
    assert table[3] > 0
    return table, view


def test_coded_texts_give_the_same_lines_features_and_rejects(dirty, tmp_path, monkeypatch):
    """The order lines' category and channel are stored as ENUM codes in the texts' order
    (sources.CODED): the same texts line by line, and the same features, rejects and summary as
    with the texts stored (padded, capitalised and accented values, null strings read as NULL)."""
    cfg = load_config(data=dirty, threads=2)

    def run(name):
        with open_session(cfg, only=FEATURE_TABLES) as s:
            df = compute_features(s)[0]
            write_rejects(s, tmp_path / name)
            types = dict(s.con.execute("SELECT column_name, column_type FROM (DESCRIBE orders_valid)").fetchall())
            lines = set(s.con.execute("SELECT customer_id, order_id, order_ts, unit_price, quantity, product_id, "
                                      "CAST(category AS VARCHAR), CAST(channel AS VARCHAR) FROM orders_valid").fetchall())
            return df, (tmp_path / name).read_bytes(), s.summaries["orders"].as_dict(), types, lines

    coded = run("coded.parquet")
    monkeypatch.setattr(sources, "CODED", {})
    texts = run("texts.parquet")
    assert coded[3]["category"].startswith("ENUM(") and coded[3]["channel"].startswith("ENUM(")
    assert texts[3]["category"] == texts[3]["channel"] == "VARCHAR"
    assert coded[4] == texts[4]
    channels = {line[7] for line in coded[4]}
    assert {"tél", "NULL", None} & channels == {"tél", None} and any(c and c.startswith(" ") for c in channels)
    assert None in {line[6] for line in coded[4]}
    assert coded[0].equals(texts[0], null_equal=True)
    assert coded[1:3] == texts[1:3]


@pytest.mark.parametrize("most", [3, 5, 12])
def test_the_coded_columns_distinct_texts_are_found_in_one_bounded_scan(monkeypatch, most):
    """Each coded column's distinct texts (NULL left out), or more than CODED_MAX of them where it
    has more: one GROUPING SETS scan stopped by a LIMIT; when a wide column reaches it, the other
    columns are read again in full (their values may have been cut)."""
    monkeypatch.setattr(sources, "CODED_MAX", most)
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT CASE WHEN i % 7 = 0 THEN NULL ELSE 'c' || (i % 4) END AS __raw_a, "
                "'w' || (i % 11) AS __raw_b, i % 2 AS __raw_c FROM range(500) r(i)")
    got = sources._distinct_texts(con, "t", ["a", "b", "c"])
    if most >= 4:
        assert sorted(got["a"]) == ["c0", "c1", "c2", "c3"]
    else:
        assert len(got["a"]) > most
    assert sorted(got["c"]) == ["0", "1"]
    if most >= 11:
        assert sorted(got["b"]) == sorted(f"w{k}" for k in range(11))
    else:
        assert len(got["b"]) > most and len(set(got["b"])) == len(got["b"])
    assert sorted(sources._distinct_texts(con, "t", ["a"])["a"]) == ["c0", "c1", "c2", "c3"]
