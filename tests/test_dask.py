"""Issue 16: the Dask backend gives the local backend's bytes, fails cleanly, and refuses workers
that run another centile."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import sys

import polars as pl
import pytest
from typer.testing import CliRunner

distributed = pytest.importorskip("distributed")

import cloudpickle  # noqa: E402  (installed with distributed)

from centile.backend import partitions, worker  # noqa: E402
from centile.backend.dask import HOLD_BYTES  # noqa: E402
from centile.backend.partitions import Partitioning  # noqa: E402
from centile.backend.session import open_session  # noqa: E402
from centile.config import load_config  # noqa: E402
from centile.errors import BackendError, ConfigError  # noqa: E402
from centile.synth import generate  # noqa: E402

# the failure-injecting worker plugins below travel to the worker processes by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    generate(root / "data", 3_000, seed=16)
    toml = root / "c.toml"
    # k-means fitted on a sample of 1,000: the other customers are assigned per partition on the workers
    # a segmentation named like a feature column (top_category), which the profiles then describe
    toml.write_text(f'data = "{root / "data"}"\n[steering]\nglobal_budget = 2000.0\ncap = 4\ngap = 1\n'
                    '[segments]\nfit_sample = 1000\n[segments.rules]\n'
                    'top_category = { expr = "CASE WHEN orders_12m >= 3 THEN \'many\' END", other = "few" }\n')
    return toml


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def _run(toml, out, **overrides):
    from centile.run import run_pipeline

    return run_pipeline(load_config(toml, **overrides), out, report=False, force=True)


#: the tables whose rows the workers validate and read: the client reads none of them
GUARDED = ("orders", "email_events", "contacts", "touchpoints")


def _client_reads_no_row(monkeypatch):
    """After the Dask backend opens its session, reading a row of the guarded tables' views on the
    client raises: a stage that computes a global figure from them here fails the run."""
    from centile.backend.dask import DaskBackend

    opened = DaskBackend.open

    def guarded(self, *args, **kwargs):
        s = opened(self, *args, **kwargs)
        for name in GUARDED:
            if s.con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = $n AND temporary",
                             {"n": name}).fetchone()[0]:
                s.con.execute(f"ALTER VIEW {name} RENAME TO guarded_{name}")
                s.con.execute(f"CREATE TEMP VIEW {name} AS SELECT * FROM guarded_{name} "
                              f"WHERE error('the client read a row of {name}') IS NULL")
        return s

    monkeypatch.setattr(DaskBackend, "open", guarded)


def test_every_run_output_of_the_dask_backend_is_byte_identical_to_the_local_backend(data, cluster, tmp_path,
                                                                                      monkeypatch):
    c, client = cluster
    local = _run(data, tmp_path / "local")
    # the global figures from the customer tables (category totals, the mean purchase value, the item
    # dictionary, late campaigns, media and their costs, steering's spend and responses) are computed
    # on the workers and merged there: the client reads no row of those tables
    _client_reads_no_row(monkeypatch)
    with distributed.get_task_stream(client=client) as ts:
        remote = _run(data, tmp_path / "dask", backend="dask", scheduler=c.scheduler_address)
    a, b = _digests(tmp_path / "local"), _digests(tmp_path / "dask")
    assert len(a) >= 20 and a.keys() == b.keys()
    assert [n for n in a if a[n] != b[n]] == []
    # the feature partitions ran as tasks on both workers (one pass locally, 2 x 2 threads there)
    assert local.summaries["inputs"]["partitions"] == 1
    assert remote.summaries["inputs"]["partitions"] == 4
    tasks = [t for t in ts.data if re.match(r"centile-features-\d", str(t["key"]))]
    assert len(tasks) == 4 and len({t["worker"] for t in tasks}) == 2
    # and so did the CLV summary's and predictions, and the uplift units'
    assert len([t for t in ts.data if re.match(r"centile-clv-\d", str(t["key"]))]) == 4
    assert len([t for t in ts.data if str(t["key"]).startswith("centile-clv-predicting-")]) == 4
    assert len([t for t in ts.data if str(t["key"]).startswith("centile-uplift-units-")]) == 4
    assert len([t for t in ts.data if re.match(r"centile-attribution-\d", str(t["key"]))]) == 4
    assert len([t for t in ts.data if str(t["key"]).startswith("centile-baskets-items-")]) == 4
    assert len([t for t in ts.data if str(t["key"]).startswith("centile-baskets-pairs-")]) == 4
    traffic = json.loads((tmp_path / "dask" / "manifest.json").read_text())["summary"]["backend"]
    assert traffic["workers"] == 2 and set(traffic["partitions"]) == {
        "features", "clv", "clv: predicting", "segments: rules", "segments: scaling", "segments: clusters",
        "segments: profiles", "uplift: units", "attribution", "baskets: items", "baskets: pairs", "recommend: histories",
        "recommend: scoring", "validation",
        # the global figures from the customer tables, computed on the workers
        "features: categories", "clv: mean value", "baskets: item dictionary", "recommend: item dictionary",
        "uplift: late campaigns",
        "attribution: media", "steering: media", "steering: spend", "steering: responses"}
    # the segments' per-customer steps went to the workers as each partition's rows, once per step;
    # no task carried a large argument (the k-means model, when large, goes to each worker once)
    for step in ("segments: rules", "segments: scaling", "segments: clusters", "segments: profiles"):
        st = traffic["partitions"][step]
        assert st["tasks"] == 4 and st["bytes_per_task"] < 4 * HOLD_BYTES, step
        assert st["bytes_broadcast"] == 0 or step == "segments: clusters", step
    # the predictions read the summary rows of their own customers only, where the CLV summary's tasks
    # left them; only the rows' positions went out (4 bytes a customer)
    customers = pl.read_parquet(tmp_path / "dask" / "clv.parquet").height
    predicting = traffic["partitions"]["clv: predicting"]
    assert predicting["bytes_per_customer"] == 4 * customers and predicting["bytes_broadcast"] == 0
    assert predicting["bytes_kept_on_workers"] > 8 * predicting["bytes_per_customer"]
    # the segments' steps read the feature columns from the rows the feature tasks kept: the cluster
    # matrix's columns are all features (scaling sends nothing; clusters the rows' positions only)
    features = pl.read_parquet(tmp_path / "dask" / "features.parquet").height
    scaling, clusters = traffic["partitions"]["segments: scaling"], traffic["partitions"]["segments: clusters"]
    assert scaling["bytes_per_customer"] == 0 and scaling["bytes_kept_on_workers"] > 0
    assert clusters["bytes_per_customer"] == 4 * features and clusters["bytes_kept_on_workers"] > 0
    # the segment profiles: one merged state back (sizes, exact sums, value counts), no customer rows;
    # out go the columns the client made (the labels, the customers' attributes, clv_*)
    profiles = traffic["partitions"]["segments: profiles"]
    assert profiles["tasks"] == 4 and profiles["bytes_per_customer"] > 0 and profiles["bytes_via_files"] == 0
    assert profiles["bytes_kept_on_workers"] > 2 * profiles["bytes_per_customer"]
    assert set(pl.read_parquet(tmp_path / "dask" / "segments.parquet")["top_category"]) == {"many", "few"}
    # the kept rows are in the scratch folder, removed with the run (checked below)
    # the basket counts come back merged: one state per pass, no lines, no baskets
    assert traffic["partitions"]["baskets: items"]["bytes_via_files"] == 0
    # the feature rows come back through files, not the scheduler
    assert traffic["partitions"]["features"]["bytes_via_files"] > 50 * traffic["partitions"]["features"]["bytes_to_client"]
    assert {"uplift.parquet", "clv.parquet", "features.parquet"} <= a.keys()
    assert remote.stages["uplift"]["status"] == "ran"
    # the frames came back through the scratch folder beside --out, which is gone with the run
    assert not list(tmp_path.glob(".dask.centile-*"))
    # a run that reuses the previous run's features has no kept feature rows: the segments' steps get
    # every column from the client, and the files are the same bytes
    from centile.run import run_pipeline

    (tmp_path / "dask" / "segments.parquet").unlink()
    again = run_pipeline(load_config(data, backend="dask", scheduler=c.scheduler_address), tmp_path / "dask",
                         report=False)
    assert again.stages["features"]["status"] == "reused" and again.stages["segments"]["status"] == "ran"
    assert _digests(tmp_path / "dask") == b
    steps = again.stages["segments"]["network"]["steps"]
    assert steps["segments: scaling"]["bytes_kept_on_workers"] == 0 < steps["segments: scaling"]["bytes_per_customer"]
    assert not list(tmp_path.glob(".dask.centile-*"))


def test_a_worker_session_holds_exactly_its_partition_of_the_validated_rows(data, tmp_path, monkeypatch):
    """What a task sees (its own session over the files, filtered while reading; then, in a later
    stage, the same rows from the partition cache) equals the client's partition views over the
    whole validated inputs, row for row."""
    from centile.backend import session as session_module

    cfg = load_config(data, partitions=5)
    tables = ("orders", "email_events", "contacts", "customers", "products")
    staged: list[str] = []
    real = session_module.stage_tables
    monkeypatch.setattr(session_module, "stage_tables",
                        lambda con, t, *a, **k: (staged.extend(t), real(con, t, *a, **k))[1])

    def rows(s):
        return {t: s.frame(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}

    with open_session(cfg) as s:
        parts = Partitioning(5)
        job = worker.PartitionJob(cfg.with_(as_of=s.as_of), tuple(s.tables), parts, "check",
                                  cache=str(tmp_path / "cache"))
        for p in range(parts.count):
            with s.partition(parts, p):
                want = rows(s)
            staged.clear()
            first = worker.run_partition(job, p, _rows_of, (tables,))
            assert sorted(staged) == sorted(s.tables)  # read and validated from the files
            staged.clear()
            again = worker.run_partition(job, p, _rows_of, (tables,))
            assert staged == []  # every table from the partition's cache
            assert want["orders"].height > 0
            for t in tables:
                assert first[t].equals(want[t], null_equal=True), (p, t)
                assert again[t].equals(want[t], null_equal=True), (p, t)
                assert again[t].schema == want[t].schema
    assert len(list((tmp_path / "cache").glob("*.duckdb"))) == 5 * len(s.tables)
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_a_partition_cache_file_once_placed_is_never_replaced(tmp_path, monkeypatch):
    """Two tasks over one partition that both wrote its cache file: the first one placed stays (a
    reader may hold it open; on NFS a replaced open file can read as a stale handle), the second
    is dropped; where the file system has no hard links, the rename still places it whole."""
    from centile.backend.session import place_once

    f = tmp_path / "orders-0-9.duckdb"
    for i in range(2):
        (tmp_path / f"t{i}.tmp").write_text(f"copy {i}")
    place_once(tmp_path / "t0.tmp", f)
    inode = f.stat().st_ino
    place_once(tmp_path / "t1.tmp", f)
    assert f.read_text() == "copy 0" and f.stat().st_ino == inode
    assert not list(tmp_path.glob("*.tmp"))

    def no_links(src, dst):
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "t2.tmp").write_text("copy 2")
    g = tmp_path / "orders-10-19.duckdb"
    place_once(tmp_path / "t2.tmp", g)
    assert g.read_text() == "copy 2" and not list(tmp_path.glob("*.tmp"))


def _rows_of(s, part, tables):
    return {t: s.frame(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}


def test_frames_come_back_through_the_scratch_folder(tmp_path):
    df = pl.DataFrame({"customer_id": [3, 1], "x": [0.1, None]})
    handed = worker._offload((df, {"k": df}, 7), tmp_path, "features-00001")
    assert isinstance(handed[0], worker.FramePart) and handed[2] == 7
    assert len(list(tmp_path.iterdir())) == 2
    back = worker.reload(handed)
    assert back[0].equals(df, null_equal=True) and back[1]["k"].equals(df, null_equal=True)
    assert list(tmp_path.iterdir()) == []


class _Fail(distributed.WorkerPlugin):
    """Makes partition 1 of the feature stage raise, or kill its worker process."""

    def __init__(self, how: str) -> None:
        self.how = how

    def setup(self, worker) -> None:  # noqa: ARG002
        from centile.backend import partitions as p

        how = self.how

        def observe(label, part, s):
            if label == "features" and part == 1:
                if how == "kill":
                    os._exit(1)
                raise RuntimeError("disk on fire")
            if label == "features" and how == "raise":
                import time

                time.sleep(2)  # still running when partition 1 fails: the run waits for them to end

        p.observe = observe

    def teardown(self, worker) -> None:  # noqa: ARG002
        from centile.backend import partitions as p

        p.observe = None


def _previous_run_kept(data, out, run):
    _run(data, out)
    before = _digests(out)
    manifest = (out / "manifest.json").read_text()
    with pytest.raises(BackendError) as err:
        run()
    assert _digests(out) == before and (out / "manifest.json").read_text() == manifest
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.centile-")]
    return str(err.value)


def test_a_worker_raising_mid_stage_fails_the_run_and_keeps_the_previous_output(data, cluster, tmp_path):
    c, client = cluster
    out = tmp_path / "out"
    client.register_plugin(_Fail("raise"), name="fail")
    try:
        msg = _previous_run_kept(data, out, lambda: _run(data, out, backend="dask", scheduler=c.scheduler_address))
    finally:
        client.unregister_worker_plugin("fail")
        client.run(setattr, partitions, "observe", None)
    assert "features: partition 2 of 4 failed" in msg and "RuntimeError: disk on fire" in msg
    assert "previous output folder is untouched" in msg


def test_a_worker_killed_mid_stage_fails_the_run_and_keeps_the_previous_output(data, tmp_path):
    import dask

    out = tmp_path / "out"
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=50) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.register_plugin(_Fail("kill"), name="fail")
        msg = _previous_run_kept(data, out, lambda: _run(data, out, backend="dask", scheduler=c.scheduler_address))
    assert re.search(r"features: partition [1-4] of 4 failed", msg) and "workers running it died" in msg
    assert "more partitions (--partitions)" in msg


class _KillOnce(distributed.WorkerPlugin):
    """Kills the worker process the first time it runs partition 1 of ``label`` (a marker file says
    it happened, so the retry on the restarted or the other worker goes through)."""

    def __init__(self, label: str, marker: str) -> None:
        self.label, self.marker = label, marker

    def setup(self, worker) -> None:  # noqa: ARG002
        from centile.backend import partitions as p

        label, marker = self.label, self.marker

        def observe(step, part, s):  # noqa: ARG001
            if step == label and part == 1 and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)

        p.observe = observe


def test_a_worker_killed_in_a_step_reading_kept_rows_is_retried_with_the_local_bytes(data, tmp_path):
    """The segments' cluster assignment reads the feature rows the feature tasks kept in the scratch
    folder; its worker dies once, the scheduler runs the task again elsewhere, and the retry finds
    the kept rows still there: the run ends with the local backend's bytes."""
    marker = tmp_path / "killed"
    _run(data, tmp_path / "local")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=50) as c, \
            distributed.Client(c, set_as_default=False) as client:
        client.register_plugin(_KillOnce("segments: clusters", str(marker)), name="kill-once")
        remote = _run(data, tmp_path / "dask", backend="dask", scheduler=c.scheduler_address)
    assert marker.exists()  # a worker did die in that step
    steps = remote.stages["segments"]["network"]["steps"]
    assert steps["segments: clusters"]["bytes_kept_on_workers"] > 0
    a, b = _digests(tmp_path / "local"), _digests(tmp_path / "dask")
    assert a.keys() == b.keys() and [n for n in a if a[n] != b[n]] == []
    assert not list(tmp_path.glob(".dask.centile-*"))


def test_workers_with_another_centile_are_refused(data, cluster, tmp_path, monkeypatch):
    c, _client = cluster
    out = tmp_path / "out"
    monkeypatch.setattr(worker, "code_hash", lambda: "0" * 64)  # the client's code differs
    msg = _previous_run_kept(data, out, lambda: _run(data, out, backend="dask", scheduler=c.scheduler_address))
    assert "2 of 2 Dask workers do not run this centile" in msg and "other code" in msg
    import centile

    monkeypatch.setattr(centile, "__version__", "9.9.9")
    with pytest.raises(BackendError, match=r"centile '0\.1\.0' \(client: '9\.9\.9'\)"):
        _run(data, out, backend="dask", scheduler=c.scheduler_address)


def test_a_worker_without_centile_is_named():
    me = worker.identity()
    bad = worker.mismatches(me, {"tcp://a:1": dict(me), "tcp://b:2": ModuleNotFoundError("No module named 'centile'")})
    assert bad == ["tcp://b:2: centile cannot be imported there (ModuleNotFoundError: No module named 'centile')"]
    assert worker.mismatches(me, {"tcp://a:1": {**me, "python": "3.9"}}) == [
        f"tcp://a:1: python '3.9' (client: {me['python']!r})"]


def test_an_unreachable_scheduler_is_a_clear_error_with_exit_code_1(data, tmp_path, monkeypatch):
    from centile.backend import dask as dask_backend
    from centile.cli import app

    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT", 1)
    r = CliRunner().invoke(app, ["run", "-c", str(data), "--out", str(tmp_path / "out"), "--backend", "dask",
                                 "--scheduler", "tcp://127.0.0.1:9"])
    assert r.exit_code == 1, r.output
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("address", "why"), [
    ("notanaddress", "it is not protocol://host:port"), ("tcp://host", "it is not protocol://host:port"),
    ("tcp://host:99999", "the port is not between 1 and 65535"), ("tcp://host:port", "protocol://host:port")])
def test_a_malformed_scheduler_address_is_refused_before_connecting(data, tmp_path, monkeypatch, address, why):
    # distributed's client raised a bare ValueError ("internal error") for an address without a port,
    # then hung 20 s closing itself
    import time

    from centile.cli import app

    t0 = time.monotonic()
    r = CliRunner().invoke(app, ["run", "-c", str(data), "--out", str(tmp_path / "out"), "--scheduler", address])
    assert r.exit_code == 1, r.output
    assert f"scheduler = {address!r}" in r.output and why in r.output and "tcp://host:8786" in r.output
    assert "Internal error" not in r.output and not (tmp_path / "out").exists()
    assert time.monotonic() - t0 < 10
    monkeypatch.setenv("CENTILE_SCHEDULER", address)
    r = CliRunner().invoke(app, ["worker-check"])
    assert r.exit_code == 1 and why in r.output, r.output


@pytest.mark.parametrize("address", ["tcp://10.0.0.5:8786", "10.0.0.5:8786", "tls://sched.example.org:8786",
                                     "tcp://[::1]:8786", "inproc://10.0.0.5/1234/1"])
def test_well_formed_scheduler_addresses_are_accepted(address):
    from centile.config import BackendSpec

    assert BackendSpec("dask", address).scheduler == address
    assert BackendSpec("dask", f" {address}\n").scheduler == address


def test_without_dask_installed_the_error_says_how_to_install_it(data, tmp_path, monkeypatch):
    from centile.backend import dask as dask_backend
    from centile.cli import app

    monkeypatch.setattr(dask_backend, "distributed", None)
    r = CliRunner().invoke(app, ["run", "-c", str(data), "--out", str(tmp_path / "out"), "--backend", "dask"])
    assert r.exit_code == 1
    assert "pip install 'centile[dask]'" in r.output


def test_backend_config_section_and_flags(data, tmp_path):
    toml = tmp_path / "b.toml"
    toml.write_text(data.read_text() + '[backend]\nkind = "dask"\nscheduler = "tcp://h:8786"\n')
    cfg = load_config(toml)
    assert (cfg.backend.kind, cfg.backend.scheduler) == ("dask", "tcp://h:8786")
    assert load_config(data).backend.kind == "duckdb"
    assert load_config(data, scheduler="tcp://h:1").backend.kind == "dask"  # a scheduler means dask
    assert load_config(data, env={"CENTILE_BACKEND": "dask"}).backend.kind == "dask"
    with pytest.raises(ConfigError, match="backend is duckdb"):
        load_config(data, backend="duckdb", scheduler="tcp://h:1")
    toml.write_text(data.read_text() + '[backend]\nkind = "dask"\nschedular = "x"\n')
    with pytest.raises(ConfigError, match="did you mean 'scheduler'"):
        load_config(toml)
    from centile.backend import open_backend

    with pytest.raises(ConfigError, match=r"--backend\) is not available; choose one of dask, duckdb"):
        open_backend(load_config(data, backend="spark"))


def test_centile_help_does_not_import_dask():
    import subprocess

    code = ("import sys; from typer.testing import CliRunner; from centile.cli import app; "
            "r = CliRunner().invoke(app, ['run', '--help']); assert r.exit_code == 0, r.output; "
            "assert '--scheduler' in r.output; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_worker_that_cannot_see_the_scratch_folder_says_so(data, tmp_path):
    cfg = load_config(data)
    job = worker.PartitionJob(cfg.with_(as_of=dt.date(2024, 1, 1)), ("orders",), Partitioning(2), "features",
                              scratch=str(tmp_path / "not-shared"))
    with pytest.raises(BackendError, match="cannot see the run's scratch folder .*not-shared.*share the file system"):
        worker.run_partition(job, 0, _rows_of, (("orders",),))


def test_a_cluster_without_workers_is_a_clear_error(data, tmp_path, monkeypatch):
    from centile.backend import dask as dask_backend

    monkeypatch.setattr(dask_backend, "WORKER_TIMEOUT", 1)
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=40) as c:
        with pytest.raises(BackendError, match="has had no worker for 1 s; start some"):
            _run(data, tmp_path / "out", backend="dask", scheduler=c.scheduler_address)
    assert not (tmp_path / "out").exists()


def test_worker_check_prints_every_worker_and_exits_1_on_a_mismatch(cluster, monkeypatch):
    from centile.cli import app

    c, _client = cluster
    r = CliRunner().invoke(app, ["worker-check", "--scheduler", c.scheduler_address], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    workers = sorted(c.workers[w].worker_address for w in c.workers)
    assert all(w in r.output for w in workers) and r.output.count(" ok ") == 2
    assert "all 2 workers run this centile" in r.output
    doc = json.loads(CliRunner().invoke(app, ["worker-check", "--scheduler", c.scheduler_address, "--json"]).stdout)
    assert doc["ok"] and [w["address"] for w in doc["workers"]] == workers
    assert {w["centile"] for w in doc["workers"]} == {doc["client"]["centile"]}

    monkeypatch.setattr(worker, "code_hash", lambda: "f" * 64)  # this machine's code differs from the workers'
    r = CliRunner().invoke(app, ["worker-check", "--scheduler", c.scheduler_address], env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    assert r.output.count("mismatch") == 2 and "other code" in r.output and "client: ffffffffffff" in r.output
    assert "2 of 2 workers do not run this centile" in r.output
    doc = json.loads(CliRunner().invoke(app, ["worker-check", "--scheduler", c.scheduler_address, "--json"]).stdout)
    assert not doc["ok"] and all(not w["ok"] and "other code" in w["problem"] for w in doc["workers"])


def test_worker_check_without_workers_or_scheduler_exits_1(monkeypatch):
    from centile.backend import dask as dask_backend
    from centile.cli import app

    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=":0", silence_logs=40) as c:
        r = CliRunner().invoke(app, ["worker-check", "--scheduler", c.scheduler_address, "--timeout", "1"])
    assert r.exit_code == 1 and "has had no worker for 1 s" in r.output
    monkeypatch.setattr(dask_backend, "CONNECT_TIMEOUT", 1)
    r = CliRunner().invoke(app, ["worker-check", "--scheduler", "tcp://127.0.0.1:9"])
    assert r.exit_code == 1 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in r.output



def test_single_job_commands_run_their_partitions_on_the_cluster_with_the_local_bytes(data, cluster, tmp_path):
    """``centile baskets`` (pairs and triples per segment), ``recommend``, ``features``, ``segments``
    and ``steer`` with --scheduler: the partitions run as tasks on the workers and every Parquet file
    equals the local command's."""
    from centile.cli import app

    c, client = cluster
    ids = pl.read_parquet(data.parent / "data" / "customers.parquet").select("customer_id")
    # (and 40 customers without a line: recommend fills them from their segment's popular items)
    ids = pl.concat([ids, pl.DataFrame({"customer_id": range(10**9, 10**9 + 40)}).cast(ids.schema)])
    seg = ids.sort("customer_id").with_columns(club=pl.Series([f"c{i % 3}" for i in range(ids.height)]))
    seg.write_parquet(tmp_path / "seg.parquet")
    runner = CliRunner()
    for command, extra in (("baskets", ["--max-size", "3", "--min-count", "2", "--segments",
                                        str(tmp_path / "seg.parquet"), "--segment-by", "club"]),
                           ("recommend", ["--segments", str(tmp_path / "seg.parquet"), "--segment-by", "club"]),
                           ("features", []), ("segments", []), ("steer", [])):
        local = runner.invoke(app, [command, "-c", str(data), "-o", str(tmp_path / f"{command}-local"), *extra])
        assert local.exit_code == 0, local.output
        with distributed.get_task_stream(client=client) as ts:
            remote = runner.invoke(app, [command, "-c", str(data), "-o", str(tmp_path / f"{command}-dask"), *extra,
                                         "--backend", "dask", "--scheduler", c.scheduler_address])
        assert remote.exit_code == 0, remote.output
        a, b = _digests(tmp_path / f"{command}-local"), _digests(tmp_path / f"{command}-dask")
        assert a and a == b, command
        keys = [str(t["key"]) for t in ts.data]
        if command == "baskets":
            for p in ("items", "pairs", "triples"):
                assert len([k for k in keys if k.startswith(f"centile-baskets-{p}-")]) == 4, p
            summary = pl.read_parquet(tmp_path / "baskets-dask" / "basket_summary.parquet")
            assert summary["segment"].to_list() == ["all", "c0", "c1", "c2"]
            assert summary["frequent_triples"].sum() > 0 and summary["frequent_pairs"].min() > 0
        elif command == "recommend":
            for p in ("histories", "scoring"):
                assert len([k for k in keys if k.startswith(f"centile-recommend-{p}-")]) == 4, p
            recs = pl.read_parquet(tmp_path / "recommend-dask" / "recommendations.parquet")
            idle = recs.filter(pl.col("customer_id") >= 10**9)
            assert idle["customer_id"].n_unique() == 40 and set(idle["source"]) == {"popularity"}
            assert set(recs["source"]) == {"popularity", "co-occurrence"}
        else:  # segments computes the features first, steer the CLV summary (then its predictions)
            step = {"features": "features", "segments": "features", "steer": "clv"}[command]
            assert len([k for k in keys if re.match(rf"centile-{step}-\d", k)]) == 4, command
            if command == "segments":  # and the segments' per-customer steps ran there too
                for p in ("rules", "scaling", "profiles"):
                    assert len([k for k in keys if k.startswith(f"centile-segments-{p}-")]) == 4, p
            if command == "steer":
                assert len([k for k in keys if k.startswith("centile-clv-predicting-")]) == 4
    assert not list(tmp_path.glob(".*centile-*"))


def test_file_urls_on_the_cluster_give_the_local_bytes_and_memory_urls_are_refused(data, cluster, tmp_path):
    """Inputs named by ``file://`` URLs: the workers read them through fsspec as the client does,
    and every output equals the local backend's over the plain folder. A ``memory://`` input exists
    in the client's process only: the Dask backend says so."""
    pytest.importorskip("fsspec")
    from centile.cli import app

    c, _client = cluster
    folder = data.parent / "data"
    runner = CliRunner()
    local = runner.invoke(app, ["features", "--data", str(folder), "-o", str(tmp_path / "local")])
    assert local.exit_code == 0, local.output
    with distributed.get_task_stream(client=_client) as ts:
        remote = runner.invoke(app, ["features", "--data", f"file://{folder}", "-o", str(tmp_path / "url"),
                                     "--backend", "dask", "--scheduler", c.scheduler_address])
    assert remote.exit_code == 0, remote.output
    assert len([t for t in ts.data if re.match(r"centile-features-\d", str(t["key"]))]) == 4
    assert _digests(tmp_path / "local") == _digests(tmp_path / "url")
    manifest = json.loads((tmp_path / "url" / "manifest.json").read_text())
    assert all(f["path"].startswith("file:///") for f in manifest["inputs"]["orders"])

    import fsspec

    fsspec.filesystem("memory").pipe("memory://dask-refuses/orders.parquet", (folder / "products.parquet").read_bytes())
    r = runner.invoke(app, ["features", "--data", "memory://dask-refuses", "-o", str(tmp_path / "m"),
                            "--backend", "dask", "--scheduler", c.scheduler_address])
    assert r.exit_code == 1 and "memory:// input lives in this process" in r.output


def test_a_task_the_cluster_lost_is_said_as_such():
    """A future without an exception (its inputs lost with every worker that held them) is not
    reported as "NoneType: None"."""
    from centile.backend.dask import _failure

    class Lost:
        status = "lost"

        def exception(self):
            return None

    err = _failure("validating", 0, 1, Lost(), where="validating customers, customers.parquet")
    assert isinstance(err, BackendError) and "lost it (lost)" in str(err) and "NoneType" not in str(err)
    assert "previous output folder is untouched" in str(err)
