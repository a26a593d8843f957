"""Issue 16: on a Dask cluster the workers validate the input and write the customer-hash pieces.

A task per chunk of the input files (a file, or a run of row groups of a large Parquet file)
validates it and writes its rows into the pieces; a task per piece sets the duplicate lines aside
(copies spread over several files land in one piece). The rows kept and set aside, the summary,
``rejects.parquet`` and every Parquet output equal the client's own validation.
"""

from __future__ import annotations

import hashlib
import os
import sys

import duckdb
import polars as pl
import pytest

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402  (installed with distributed)

from centile.backend import chunks  # noqa: E402
from centile.backend.session import open_session  # noqa: E402
from centile.config import load_config  # noqa: E402
from centile.errors import BackendError  # noqa: E402
from centile.synth import generate  # noqa: E402

# the failure-injecting worker plugins below travel to the worker processes by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", params=["parquet", "csv"])
def dirty(request, tmp_path_factory):
    """Order lines in 3 files, 3 % of them copied into another file (exact duplicates across files),
    guest lines, negative prices and unreadable dates; e-mail events in 2 files with unknown events
    and missing customers; contacts, touchpoints, customers and products as generated."""
    fmt = request.param
    root = tmp_path_factory.mktemp(f"dpieces-{fmt}")
    generate(root / "clean", 2_000, seed=61)
    out = root / "data"
    out.mkdir()
    con = duckdb.connect()
    con.execute("SELECT setseed(0.25)")
    for name in ("products", "customers", "contacts", "touchpoints"):
        con.execute(f"COPY (SELECT * FROM '{root}/clean/{name}.parquet') TO '{out}/{name}.parquet'")
    text_ts = "CAST(order_ts AS VARCHAR)" if fmt == "csv" else "order_ts"
    bad_ts = "'not a date'" if fmt == "csv" else "NULL"
    orders = f"""SELECT * REPLACE (
        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id,
        CASE WHEN random() < 0.01 THEN -unit_price ELSE unit_price END AS unit_price,
        CASE WHEN random() < 0.005 THEN {bad_ts} ELSE {text_ts} END AS order_ts)
      FROM (SELECT * FROM '{root}/clean/orders/*.parquet'
            UNION ALL (SELECT * FROM '{root}/clean/orders/*.parquet' USING SAMPLE 3 PERCENT (bernoulli, 11)))"""
    con.execute(f"CREATE TABLE o AS {orders}")
    (out / "orders").mkdir()
    for i in range(3):
        opts = "FORMAT parquet, ROW_GROUP_SIZE 2048" if fmt == "parquet" else "FORMAT csv, HEADER"
        # hash-spread lines: the two copies of a duplicate usually land in different files
        con.execute(f"COPY (SELECT * EXCLUDE (__n) FROM (SELECT *, row_number() OVER () AS __n FROM o) WHERE __n % 3 = {i} "
                    f"ORDER BY __n) TO '{out}/orders/part-{i}.{fmt}' ({opts})")
    (out / "email_events").mkdir()
    con.execute(f"""CREATE TABLE e AS SELECT * REPLACE (
        CASE WHEN random() < 0.02 THEN 'N/A' ELSE event END AS event,
        CASE WHEN random() < 0.01 THEN NULL ELSE customer_id END AS customer_id)
      FROM '{root}/clean/email_events.parquet'""")
    for i in range(2):
        con.execute(f"COPY (SELECT * EXCLUDE (__n) FROM (SELECT *, row_number() OVER () AS __n FROM e) WHERE __n % 2 = {i} "
                    f"ORDER BY __n) TO '{out}/email_events/part-{i}.parquet' (FORMAT parquet, ROW_GROUP_SIZE 2048)")
    toml = root / "c.toml"
    orders = f'[tables.orders]\npath = "{out}/orders"\nformat = "csv"\n' if fmt == "csv" else ""
    toml.write_text(f'data = "{out}"\n{orders}[steering]\nglobal_budget = 2000.0\ncap = 4\ngap = 1\n')
    return toml


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def _run(toml, out, **overrides):
    """The feature job (validation, rejects, summary and the partitions' features) into ``out``:
    every output that validation decides; later stages read the same validated views."""
    from centile.features import run_features

    return run_features(load_config(toml, **overrides), out=out)


def _same_summary(a, b):
    keep = ("as_of", "tables", "rows_rejected", "order_lines_after_as_of", "notes")
    return {k: a.summary[k] for k in keep} == {k: b.summary[k] for k in keep}


def _in_process(tmp_path, runs=1):
    """A ``chunked`` for :func:`open_session` that runs every task here (each chunk ``runs`` times,
    as a retried task would), recording the chunks."""
    seen = []

    def chunked(con, tables, scratch, count, progress):
        job, plan = chunks.prepare(con, load_config_of[0], tables, scratch, count)
        seen.extend(plan)
        written = []
        for c in plan:
            for _ in range(runs):
                written.append(chunks.write_chunk(job, c))
        assert len({w.files for w in written}) == len(plan)  # a chunk run again writes the same files
        settled = [chunks.settle_piece(job, k, fs) for k, fs in chunks.by_piece(written[::runs]).items()]
        if runs > 1:  # a piece settled again (a retried task) gives the same files and state
            assert [chunks.settle_piece(job, s.piece, fs) for s, fs in
                    zip(settled, chunks.by_piece(written[::runs]).values(), strict=True)] == settled
        pieces, states, dups = chunks.merge(job, settled, written[::runs])
        for s in settled:
            for f in s.superseded:
                os.unlink(f)
        return pieces, states, dups

    load_config_of: list = [None]
    return chunked, load_config_of, seen


def _session_rows(s):
    return {t: s.frame(f"SELECT * FROM {t}_valid ORDER BY ALL") for t in ("orders", "email_events", "customers",
                                                                         "contacts", "touchpoints")} | {
        "rejects": s.frame('SELECT * FROM rejects ORDER BY ALL')}


@pytest.mark.parametrize("runs", [1, 2])
def test_chunk_tasks_keep_and_set_aside_exactly_the_rows_of_the_clients_validation(dirty, tmp_path, monkeypatch,
                                                                                   runs):
    """The same valid rows (as a multiset), the same rejects (duplicate lines across files included)
    and the same summary as the session that validates everything itself; a chunk written twice (a
    retried task) leaves one copy of its rows."""
    monkeypatch.setattr(chunks, "CHUNK_ROWS", 5_000)  # large Parquet files go in runs of row groups
    cfg = load_config(dirty, partitions=3, buckets="on")
    chunked, holder, seen = _in_process(tmp_path, runs)
    holder[0] = cfg
    with open_session(cfg, spill=tmp_path / "a") as s:
        want, summary = _session_rows(s), {n: t.as_dict() for n, t in s.summaries.items()}
        as_of = s.as_of
    with open_session(cfg, spill=tmp_path / "b", bucket=tmp_path / "b", chunked=chunked) as s:
        got, summary2 = _session_rows(s), {n: t.as_dict() for n, t in s.summaries.items()}
        assert s.as_of == as_of and set(s.pieces) == {"orders", "email_events", "customers", "contacts",
                                                      "touchpoints"}
        files = [f for p in s.pieces.values() for _k, fs in p.files for f in fs]
        assert len(files) == len(set(files))
    for t in want:
        assert got[t].equals(want[t], null_equal=True), t
    assert summary2 == summary
    reasons = summary["orders"]["rejects_by_reason"]
    assert reasons["duplicate line"] > 20 and len(reasons) >= 3, reasons
    assert len(summary["email_events"]["rejects_by_reason"]) >= 2
    # the duplicate lines were spread over files, and some files were read in several chunks
    assert len({c.files for c in seen if c.table == "orders"}) == 3
    if str(dirty).find("parquet") >= 0:
        assert any(c.rows is not None for c in seen)


def test_chunk_tasks_read_a_data_folder_of_symbolic_links(dirty, tmp_path):
    """A data folder whose files are symbolic links to files elsewhere: a chunk task's connection may
    read only its files' folders, and DuckDB checks a link's target, so the targets' folders are
    allowed too (they were not: "file system operations are disabled by configuration")."""
    data, links = dirty.parent / "data", tmp_path / "links"
    for f in data.rglob("*"):
        if f.is_file():
            (links / f.relative_to(data)).parent.mkdir(parents=True, exist_ok=True)
            (links / f.relative_to(data)).symlink_to(f)
    toml = tmp_path / "links.toml"
    toml.write_text(dirty.read_text().replace(str(data), str(links)))
    cfg = load_config(dirty, partitions=3, buckets="on")
    with open_session(cfg, spill=tmp_path / "a") as s:
        want = _session_rows(s)
    chunked, holder, _seen = _in_process(tmp_path)
    holder[0] = load_config(toml, partitions=3, buckets="on")
    with open_session(holder[0], spill=tmp_path / "b", bucket=tmp_path / "b", chunked=chunked) as s:
        got = _session_rows(s)
    # the rejects name the files they were read from: the links
    got["rejects"] = got["rejects"].with_columns(pl.col(pl.String).str.replace_all(str(links), str(data), literal=True))
    for t in want:
        assert got[t].sort(pl.all()).equals(want[t].sort(pl.all()), null_equal=True), t


def test_duplicate_copies_in_different_files_are_set_aside_per_piece(dirty, tmp_path):
    """By construction most duplicate pairs lie in two files; each pair's copies share a piece."""
    cfg = load_config(dirty, partitions=3, buckets="on")
    with open_session(cfg, spill=tmp_path / "a") as s:
        cols = ", ".join(c for c in s.tables["orders"].columns if s.tables["orders"].has(c))
        spread = s.con.execute(
            f"SELECT count(*) FROM (SELECT {cols}, count(DISTINCT __centile_file) AS f FROM "
            f"(SELECT * FROM orders_typed) GROUP BY ALL HAVING count(*) > 1 AND f > 1)").fetchall()[0][0]
    assert spread > 10


def test_the_workers_validate_the_input_and_every_output_is_byte_identical(dirty, cluster, tmp_path, monkeypatch):
    c, client = cluster
    monkeypatch.setattr(chunks, "CHUNK_ROWS", 5_000)
    local = _run(dirty, tmp_path / "local")
    with distributed.get_task_stream(client=client) as ts:
        remote = _run(dirty, tmp_path / "dask", backend="dask", scheduler=c.scheduler_address)
    a, b = _digests(tmp_path / "local"), _digests(tmp_path / "dask")
    assert a.keys() == b.keys() == {"features.parquet", "rejects.parquet"}
    assert [n for n in a if a[n] != b[n]] == []
    assert _same_summary(local, remote)
    assert local.summary["tables"]["orders"]["rejects_by_reason"]["duplicate line"] > 20
    assert {"orders", "email_events"} <= set(remote.summary["pieces"]) and set(remote.summary["pieces"].values()) == {4}
    keys = [str(t["key"]) for t in ts.data]
    validate = [k for k in keys if k.startswith("centile-validate-")]
    settle = [k for k in keys if k.startswith("centile-settle-")]
    assert len(validate) >= 5 and len(settle) == 4
    assert len({t["worker"] for t in ts.data if str(t["key"]).startswith("centile-validate-")}) == 2


class _Kill(distributed.WorkerPlugin):
    """Kills the worker process while it writes a chunk of the order lines (only the first time when
    ``marker`` is given: the marker file says it happened; with ``times``, the first ``times`` times,
    marked ``<marker>-0``, ``<marker>-1``, ...)."""

    def __init__(self, marker: str | None = None, times: int = 1) -> None:
        self.marker = marker
        self.times = times

    def setup(self, worker) -> None:  # noqa: ARG002
        from centile.backend import chunks as ch

        marker, times = self.marker, self.times

        def observe(table, index):
            if table == "orders":
                if marker is None:
                    os._exit(1)
                for i in range(times):
                    # created by one worker only: two chunks of orders may run at once on two workers
                    name = marker if times == 1 else f"{marker}-{i}"
                    try:
                        os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                    except FileExistsError:
                        continue
                    os._exit(1)

        ch.observe = observe

    def teardown(self, worker) -> None:  # noqa: ARG002
        from centile.backend import chunks as ch

        ch.observe = None


def test_a_worker_killed_while_writing_pieces_fails_the_run_and_keeps_the_previous_output(dirty, tmp_path):
    import dask

    out = tmp_path / "out"
    _run(dirty, out)
    before, manifest = _digests(out), (out / "manifest.json").read_text()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=50) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.register_plugin(_Kill(), name="kill")
        with pytest.raises(BackendError) as err:
            _run(dirty, out, backend="dask", scheduler=c.scheduler_address)
    # the task that fails first may be another one the dead worker held (each counts as killed once)
    assert str(err.value).startswith("validating ") and "died" in str(err.value)
    assert "split large CSV files" in str(err.value) and "--partitions" not in str(err.value)
    assert _digests(out) == before and (out / "manifest.json").read_text() == manifest
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.centile-")]


def test_a_chunk_retried_after_its_worker_died_gives_the_same_bytes(dirty, tmp_path):
    out = tmp_path / "out"
    _run(dirty, tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.register_plugin(_Kill(str(tmp_path / "killed")), name="kill")
        _run(dirty, out, backend="dask", scheduler=c.scheduler_address)
    assert (tmp_path / "killed").exists()  # a worker died while writing, and the task ran again
    assert _digests(out) == _digests(tmp_path / "local")
    assert not list(tmp_path.glob(".out.centile-*"))


def test_a_run_whose_every_worker_died_once_runs_on_with_their_replacements(dirty, tmp_path):
    """Both workers die while validating (one after the other; the nannies start new ones): the
    validation job every chunk task reads is held by the scheduler as a task, so it is computed
    again on the new workers (a scattered value died with the last worker holding it, and the run
    failed with "the cluster lost it")."""
    out = tmp_path / "out"
    _run(dirty, tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.register_plugin(_Kill(str(tmp_path / "killed"), times=2), name="kill")
        _run(dirty, out, backend="dask", scheduler=c.scheduler_address)
    assert (tmp_path / "killed-0").exists() and (tmp_path / "killed-1").exists()
    assert _digests(out) == _digests(tmp_path / "local")
    assert not list(tmp_path.glob(".out.centile-*"))


@pytest.mark.parametrize("kept", [None, "quantity > 1 OR unit_price < 0"], ids=["all", "filter"])
def test_the_client_counts_no_line_of_the_customer_tables_and_the_summary_keeps_the_exact_counts(
        dirty, kept, cluster, tmp_path, monkeypatch):
    """On a cluster the client never counts the order lines, e-mail events, ... (a full parse of a CSV
    file, a scan for a filter): the chunk tasks count them as they validate them, and the partition
    count comes from an estimate (files' sizes and first rows). The summary's counts, the rejects and
    the features are the local backend's, CSV or Parquet, with or without a filter."""
    from centile.backend import sources

    if kept is None and "parquet" in str(dirty):
        pytest.skip("Parquet without a filter: the counts are the footers'")
    c, _client = cluster
    toml = dirty
    if kept is not None:  # a filter on the order lines (some negative prices kept: rejected, not filtered)
        text = dirty.read_text()
        section = "[tables.orders]\n"
        toml = tmp_path / "filtered.toml"
        toml.write_text(text.replace(section, f"{section}filter = \"{kept}\"\n") if section in text else
                        text.replace("[steering]", f"{section}filter = \"{kept}\"\n[steering]"))
    local = _run(toml, tmp_path / "local")
    counted = []
    real = sources._count_source

    def count(con, spec):
        counted.append(spec.name)
        if spec.name != "products":  # the only table the client validates itself
            raise AssertionError(f"the client counted the rows of {spec.name}")
        return real(con, spec)

    monkeypatch.setattr(sources, "_count_source", count)  # the client's process only: workers are others
    remote = _run(toml, tmp_path / "dask", backend="dask", scheduler=c.scheduler_address)
    assert counted == ["products"]
    assert _digests(tmp_path / "local") == _digests(tmp_path / "dask")
    assert _same_summary(local, remote)
    orders = remote.summary["tables"]["orders"]
    assert (orders["rows_filtered_by_config"] > 1_000) == (kept is not None)
    # the estimate that chose the partition count is said to be one, and is near the count
    estimate = remote.summary["order_lines_estimated"]
    assert 0.5 < estimate / (orders["rows_read"] - orders["rows_filtered_by_config"]) < 2
    assert "order_lines_estimated" not in local.summary
