"""Issues 12 and 16: the validated rows written once into customer-hash pieces, read per partition.

The pieces must give the same bytes as filtering whole tables by the hash (push-down), a
partition must read only its own pieces (here and on a worker), and the pieces must be gone
after the run.
"""

from __future__ import annotations

import errno
import hashlib
import re
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from centile.backend import buckets, partitions, sources
from centile.backend.buckets import piece_sql, scratch_error, write_pieces
from centile.backend.partitions import BUCKETS, Partitioning, bucket_sql
from centile.backend.session import open_session
from centile.config import load_config
from centile.errors import ConfigError, OutputError
from centile.features.compute import FEATURE_TABLES, compute_features, write_rejects
from centile.synth import generate


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """Generated data with rejects in orders and e-mail events, guest lines and duplicate lines."""
    root = tmp_path_factory.mktemp("buckets")
    generate(root / "clean", 1_500, seed=31)
    out = root / "data"
    (out / "orders").mkdir(parents=True)
    con = duckdb.connect()
    con.execute("SELECT setseed(0.5)")
    for name in ("products", "customers", "contacts", "touchpoints"):
        con.execute(f"COPY (SELECT * FROM '{root}/clean/{name}.parquet') TO '{out}/{name}.parquet'")
    con.execute(f"""COPY (
      SELECT * REPLACE (
        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id,
        CASE WHEN random() < 0.01 THEN -unit_price ELSE unit_price END AS unit_price)
      FROM (SELECT * FROM '{root}/clean/orders/*.parquet'
            UNION ALL (SELECT * FROM '{root}/clean/orders/*.parquet' USING SAMPLE 2 PERCENT (bernoulli, 7)))
      ORDER BY customer_id, order_id) TO '{out}/orders/part-0.parquet'""")
    con.execute(f"""COPY (
      SELECT * REPLACE (CASE WHEN random() < 0.02 THEN 'N/A' ELSE event END AS event,
                        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id)
      FROM '{root}/clean/email_events.parquet' ORDER BY customer_id, ts) TO '{out}/email_events.parquet'""")
    # the same without duplicate lines: the order lines can stay a view over the files
    nodup = root / "nodup"
    (nodup / "orders").mkdir(parents=True)
    for name in ("products", "customers", "contacts", "touchpoints", "email_events"):
        con.execute(f"COPY (SELECT * FROM '{out}/{name}.parquet') TO '{nodup}/{name}.parquet'")
    con.execute(f"COPY (SELECT DISTINCT * FROM '{out}/orders/*.parquet' ORDER BY ALL) TO '{nodup}/orders/part-0.parquet'")
    return out


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_rows_piece_is_the_partition_holding_its_bucket():
    con = duckdb.connect()
    con.execute("CREATE TABLE t AS SELECT range AS customer_id FROM range(200000)")
    for count in (2, 3, 5, 7, 16, 100):
        rows = con.execute(f"SELECT {bucket_sql()} AS b, {piece_sql(count)} AS k FROM t").fetchall()
        parts = Partitioning(count)
        for b, k in rows:
            lo, hi = parts.bounds(k)
            assert lo <= b < hi, (count, b, k)
        assert {k for _, k in rows} == set(range(count))
    assert buckets.Pieces("t", "/x", 7, ("customer_id",), False, ()).exact(*Partitioning(7).bounds(3))
    assert not buckets.Pieces("t", "/x", 7, ("customer_id",), False, ()).exact(*Partitioning(4).bounds(1))
    assert buckets.Pieces("t", "/x", 4, ("customer_id",), False, ()).exact(*Partitioning(2).bounds(1))
    assert buckets.Pieces("t", "/x", 3, ("customer_id",), False, ()).exact(0, BUCKETS)


def _features(cfg, rejects: Path, bucket: Path | None):
    with open_session(cfg, only=FEATURE_TABLES, spill=bucket, bucket=bucket) as s:
        df = compute_features(s)[0]
        write_rejects(s, rejects)
        summary = {n: t.as_dict() for n, t in s.summaries.items()}
        return df, _digest(rejects), summary, s.lines_after_as_of, sorted(s.pieces)


@pytest.mark.parametrize("view", [False, True])
def test_features_rejects_and_summary_from_pieces_equal_the_push_down(dirty, tmp_path, monkeypatch, view):
    """P = 3: the pieces (orders as a table, and as a view over the files written with their rejected
    rows) give the same features, rejects and summary as filtering whole tables by the hash."""
    if view:  # the order lines stay a view over the files (as under a tight memory limit, no duplicates)
        monkeypatch.setattr(sources, "VIEW_SHARE", 0.0)
        cfg = load_config(data=dirty.parent / "nodup", partitions=3, threads=2, memory_limit="4GB",
                          as_of="2025-06-01")
    else:  # every customer table into pieces, also those held in memory (what a cluster does)
        cfg = load_config(data=dirty, partitions=3, threads=2, buckets="on")
    pushed = _features(cfg.with_(backend=replace(cfg.backend, buckets="off")), tmp_path / "a.parquet",
                       tmp_path / "spill-a")
    pieces = _features(cfg, tmp_path / "b.parquet", tmp_path / "spill-b")
    assert pushed[4] == [] and {"orders", "email_events"} <= set(pieces[4])
    assert pieces[0].equals(pushed[0], null_equal=True)
    assert pieces[1:4] == pushed[1:4]
    assert sum(pushed[2]["orders"]["rejects_by_reason"].values()) > 0 and pushed[2]["email_events"]["rows_rejected"]
    assert (pushed[2]["orders"]["rejects_by_reason"].get("duplicate line", 0) > 0) is not view


def _files_of(con: duckdb.DuckDBPyConnection, view: str) -> list[str]:
    sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = $v", {"v": view}).fetchall()[0][0]
    return re.findall(r"'([^']+\.parquet)'", sql)


def test_each_partition_reads_only_its_own_pieces(dirty, tmp_path, monkeypatch):
    seen: dict[int, dict[str, list[str]]] = {}
    read: list[tuple[str, list[str]]] = []

    def observe(label, part, s):
        seen[part] = {t: _files_of(s.con, t) for t in ("orders", "email_events")}
        seen[part]["rows"] = s.con.execute(f"SELECT count(*) FROM orders WHERE {bucket_sql()} NOT BETWEEN "
                                           f"{Partitioning(4).bounds(part)[0]} AND "
                                           f"{Partitioning(4).bounds(part)[1] - 1}").fetchall()[0][0]

    monkeypatch.setattr(partitions, "observe", observe)
    monkeypatch.setattr(buckets, "observe", lambda table, files: read.append((table, files)))
    cfg = load_config(data=dirty, partitions=4, buckets="on")
    with open_session(cfg, only=FEATURE_TABLES, spill=tmp_path / "spill", bucket=tmp_path / "spill") as s:
        compute_features(s)
        for table in ("orders", "email_events"):
            p = s.pieces[table]
            assert p.count == 4 and [k for k, _ in p.files] == [0, 1, 2, 3]
    assert sorted(seen) == [0, 1, 2, 3]
    for part, views in seen.items():
        assert views.pop("rows") == 0
        for table, files in views.items():
            pieces = {re.search(r"__piece=(\d+)", f).group(1) for f in files if "__piece=" in f}
            assert pieces == {str(part)}, (table, part, files)
            assert all(f.endswith("schema.parquet") or f"__piece={part}/" in f for f in files)
    # no view read an input file once the pieces were written: every file named is a piece
    assert read and all(str(tmp_path / "spill") in f for _t, files in read for f in files)


def test_a_workers_partition_reads_only_its_pieces_and_holds_the_same_rows(dirty, tmp_path, monkeypatch):
    """A task given the client's pieces (the Dask backend) validates its partition from its pieces
    alone, and holds the same rows as a task that filters the input files by the hash."""
    read: list[tuple[str, list[str]]] = []
    cfg = load_config(data=dirty, partitions=3, buckets="on")
    with open_session(cfg, only=FEATURE_TABLES, spill=tmp_path / "spill", bucket=tmp_path / "spill") as s:
        pieces, as_of = dict(s.pieces), s.as_of
        monkeypatch.setattr(buckets, "observe", lambda table, files: read.append((table, files)))
        part = Partitioning(3)
        for p in range(3):
            read.clear()
            wcfg = cfg.with_(as_of=as_of)
            with open_session(wcfg, only=FEATURE_TABLES, buckets=part.bounds(p), pieces=pieces) as w, \
                    open_session(wcfg, only=FEATURE_TABLES, buckets=part.bounds(p)) as pushed:
                assert {"orders", "email_events"} <= {t for t, _ in read}
                assert all(f.endswith("schema.parquet") or f"__piece={p}/" in f for _t, fs in read for f in fs)
                for t in ("orders", "email_events"):
                    a = w.frame(f"SELECT * FROM {t} ORDER BY ALL")
                    b = pushed.frame(f"SELECT * FROM {t} ORDER BY ALL")
                    assert a.height > 0 and a.equals(b, null_equal=True), (t, p)
                assert sources.is_table(w.con, "orders_valid")  # as a worker's own validation leaves it


def test_a_whole_run_from_pieces_is_byte_identical_and_leaves_no_pieces(dirty, tmp_path, monkeypatch):
    from centile.run import run_pipeline

    written: list[str] = []
    monkeypatch.setattr(buckets, "observe", lambda table, files: written.extend(files))
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{dirty}"\n[steering]\nglobal_budget = 2000.0\ncap = 4\ngap = 1\n')
    runs = {}
    for mode in ("off", "on", "auto"):
        out = tmp_path / f"run-{mode}"
        run_pipeline(load_config(toml, partitions=3, threads=2, buckets=mode), out, report=False)
        runs[mode] = {p.name: _digest(p) for p in sorted(out.glob("*.parquet"))}
    assert len(runs["on"]) >= 15 and runs["on"] == runs["off"] == runs["auto"]
    assert written and all(".run-on.centile-spill-" in f or ".run-auto.centile-spill-" in f for f in written)
    assert not any(Path(f).exists() for f in written)
    assert not list(tmp_path.glob(".run-*.centile-*"))


def test_which_tables_go_into_pieces(dirty, tmp_path, monkeypatch):
    """``auto`` in this process: only the tables that stay views over the input files (filtering a
    table held in memory costs no more than reading its pieces); on a cluster, and with ``on``,
    every customer table; one partition, or ``off``: none."""
    from centile.backend.session import bucketing

    monkeypatch.setattr(sources, "VIEW_SHARE", 0.0)  # the order lines stay a view, as under a tight limit
    cfg = load_config(data=dirty.parent / "nodup", partitions=3, memory_limit="4GB")
    with open_session(cfg, only=FEATURE_TABLES, spill=tmp_path / "a", bucket=tmp_path / "a") as s:
        assert {"email_events", "orders"} <= set(s.pieces)
    # with duplicate lines set aside the order lines are a table held in memory: filtered there
    with open_session(cfg.with_(tables={**cfg.tables, **load_config(data=dirty).tables}), only=FEATURE_TABLES,
                      spill=tmp_path / "b", bucket=tmp_path / "b") as s:
        assert sources.is_table(s.con, "orders_rejects") and "orders" not in s.pieces
        assert "email_events" in s.pieces
    assert bucketing(cfg, 3, False) == "views" and bucketing(cfg, 3, True) == "all"
    assert bucketing(cfg, 1, True) is None
    assert bucketing(cfg.with_(backend=replace(cfg.backend, buckets="off")), 8, True) is None
    assert bucketing(cfg.with_(backend=replace(cfg.backend, buckets="on")), 2, False) == "all"


def test_a_full_scratch_disk_names_the_folder_and_the_way_out(tmp_path):
    class Full:
        def execute(self, sql, *args):
            raise duckdb.IOException(f"IO Error: Could not write file \"{tmp_path}/x\": No space left on device")

    with pytest.raises(OutputError) as exc:
        write_pieces(Full(), "orders", ["customer_id"], tmp_path / "pieces-1" / "orders", 4, with_rejects=False)
    text = str(exc.value)
    assert str(tmp_path / "pieces-1") in text and "disk is full" in text and "free space" in text
    assert "--out" in text
    err = scratch_error(tmp_path / "p" / "orders", OSError(errno.ENOSPC, "No space left on device"))
    assert "disk is full" in str(err) and "GB free" in str(err)


def test_the_buckets_key_is_validated(dirty, tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{dirty}"\n[backend]\nbuckets = "of"\n')
    with pytest.raises(ConfigError, match="buckets = 'of'.*auto, on, off.*'off'"):
        load_config(toml)
    assert load_config(data=dirty, env={"CENTILE_BUCKETS": "off"}).backend.buckets == "off"
    assert load_config(data=dirty).backend.buckets == "auto"


def test_another_partition_count_reads_the_overlapping_pieces_and_keeps_its_own_customers(dirty, tmp_path):
    """Pieces written for 4 partitions serve 3 (a step on a cluster's client): a partition reads the
    pieces overlapping its bucket range and keeps only its buckets."""
    cfg = load_config(data=dirty, partitions=4, buckets="on")
    with open_session(cfg, only=FEATURE_TABLES, spill=tmp_path / "s", bucket=tmp_path / "s") as s:
        total = s.con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
        three, seen = Partitioning(3), 0
        for p in range(3):
            lo, hi = three.bounds(p)
            with s.partition(three, p):
                n, wrong = s.con.execute(f"SELECT count(*), count(*) FILTER (WHERE {bucket_sql()} < {lo} "
                                         f"OR {bucket_sql()} >= {hi}) FROM orders").fetchall()[0]
                files = _files_of(s.con, "orders")
            assert wrong == 0 and n > 0
            assert {int(k) for k in re.findall(r"__piece=(\d+)", " ".join(files))} == {
                k for k in range(4) if Partitioning(4).bounds(k)[0] < hi and lo < Partitioning(4).bounds(k)[1]}
            seen += n
    assert seen == total
