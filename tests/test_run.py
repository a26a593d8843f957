"""``centile run``: end to end, idempotence, stage reuse, atomicity under failure, exit codes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.config import load_config
from centile.run import run_pipeline

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from centile.synth import generate

    d = tmp_path_factory.mktemp("run") / "data"
    generate(d, 2000, seed=11)
    return d


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_run_end_to_end_writes_every_output(data, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["stages"]["features"]["status"] == "ran" and doc["stages"]["clubs"]["status"] == "ran"
    names = {p.name for p in out.iterdir()}
    assert {"features.parquet", "rejects.parquet", "ranks.parquet", "clubs.parquet", "club_summary.parquet",
            "manifest.json", "report.html", "centile.log"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["job"] == "run" and manifest["as_of"]
    assert manifest["rows"]["features"] == pl.read_parquet(out / "features.parquet").height
    assert manifest["stages"]["clubs"]["files"] == ["club_summary.parquet", "clubs.parquet", "ranks.parquet"]
    assert "orders" in manifest["inputs"] and manifest["inputs"]["orders"][0]["fingerprint"]
    assert "stage clubs ran" in (out / "centile.log").read_text()
    assert not list(tmp_path.glob(".out.centile-*")), "temporary folder left behind"


def test_two_runs_give_identical_parquet_bytes(data, tmp_path):
    cfg = load_config(data=data)
    run_pipeline(cfg, tmp_path / "a")
    run_pipeline(cfg, tmp_path / "b", force=True)
    a, b = _snapshot(tmp_path / "a"), _snapshot(tmp_path / "b")
    parquet = [n for n in a if n.endswith(".parquet")]
    assert len(parquet) >= 5
    for name in parquet:
        assert a[name] == b[name], f"{name} differs between two runs over the same inputs"


def test_rerun_reuses_unchanged_stages_and_reruns_changed_ones(data, tmp_path):
    out = tmp_path / "out"
    first = run_pipeline(load_config(data=data), out)
    before = _snapshot(out)
    again = run_pipeline(load_config(data=data), out)
    # every stage that ran is reused; a stage without its config or inputs is skipped again
    assert {k: v["status"] for k, v in again.stages.items()} == {
        k: "reused" if v["status"] == "ran" else "skipped" for k, v in first.stages.items()}
    assert {"features", "clv", "clubs", "segments", "clv_groups", "uplift"} <= {
        k for k, v in again.stages.items() if v["status"] == "reused"}
    after = _snapshot(out)
    assert all(after[n] == before[n] for n in before if n.endswith(".parquet"))
    # a change of the club shares only: features are reused, clubs recomputed
    cfg_file = tmp_path / "centile.toml"
    cfg_file.write_text(f'data = "{data}"\n[clubs]\nshares = [0.02]\n')
    third = run_pipeline(load_config(cfg_file), out)
    assert third.stages["features"]["status"] == "reused"
    assert third.stages["clubs"]["status"] == "ran"
    assert set(pl.read_parquet(out / "clubs.parquet")["tier"].unique()) == {1}
    forced = run_pipeline(load_config(cfg_file), out, force=True)
    assert {k for k, v in forced.stages.items() if v["status"] == "ran"} == {
        k for k, v in first.stages.items() if v["status"] == "ran"}


def test_failed_stage_leaves_previous_results_untouched(data, tmp_path, monkeypatch):
    out = tmp_path / "out"
    run_pipeline(load_config(data=data), out)
    before = _snapshot(out)

    def broken(ctx):
        # write part of an output, then fail, as a crash mid-stage would
        ctx.staging.path("clubs.parquet").write_bytes(b"partial")
        raise RuntimeError("injected failure in the clubs stage")

    from centile.pipeline import STAGES

    monkeypatch.setitem(STAGES._items, "clubs", dataclasses.replace(STAGES["clubs"], run=broken))
    with pytest.raises(RuntimeError, match="injected"):
        run_pipeline(load_config(data=data), out, force=True)
    assert _snapshot(out) == before
    assert not list(tmp_path.glob(".out.centile-*")), "temporary folder left behind"

    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out), "--force"])
    assert r.exit_code == 2, r.output
    assert "Internal error" in r.stderr and "injected failure" in r.stderr
    assert _snapshot(out) == before


@pytest.mark.parametrize("how", ["interrupt", "sigint"])
def test_ctrl_c_inside_a_duckdb_query_is_an_interruption_not_a_bug(data, tmp_path, monkeypatch, how):
    # DuckDB catches SIGINT during a query and raises its own error instead of KeyboardInterrupt:
    # InterruptException, or from a relation's .pl() "RuntimeError: Query interrupted"
    import threading

    import duckdb

    out = tmp_path / "out"
    run_pipeline(load_config(data=data), out)
    before = _snapshot(out)

    def interrupted(ctx):
        if how == "sigint":
            raise RuntimeError("Query interrupted")
        con = duckdb.connect()
        threading.Timer(0.2, con.interrupt).start()
        con.sql("SELECT count(*) FROM range(1000000000000) a").pl()

    from centile.pipeline import STAGES

    monkeypatch.setitem(STAGES._items, "clubs", dataclasses.replace(STAGES["clubs"], run=interrupted))
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out), "--force"])
    assert r.exit_code == 130, r.output
    assert "Interrupted; nothing was written." in r.stderr and "Internal error" not in r.stderr
    assert _snapshot(out) == before
    assert not list(tmp_path.glob(".out.centile-tmp-*")), "temporary folder left behind"


def test_sigterm_from_a_job_scheduler_unwinds_like_ctrl_c(data, tmp_path):
    # SLURM, Kubernetes and systemd stop a job with SIGTERM: before, the process died at once and
    # left its staging and spill folders beside --out
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "centile.cli", "run", "--data", str(data), "--out", str(out)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in p.stderr:  # progress lines; signal once the run is past its first stage
        seen.append(line)
        if "clubs: running" in line:
            p.send_signal(signal.SIGTERM)
            break
    rest = p.communicate(timeout=120)[1]
    assert p.returncode == 130, "".join(seen) + rest
    assert "Interrupted; nothing was written." in rest
    assert not out.exists()
    assert not [f.name for f in tmp_path.iterdir() if f.name.startswith(".out.centile-") and f.name != ".out.centile.lock"]


def _child_after_sigterm(body: str, *, grace: float = 2.0, signals: int = 1) -> tuple[int, str, float]:
    """Run ``body`` in a child with centile's SIGTERM handler (grace ``grace`` s), send SIGTERM
    ``signals`` times once it prints ``ready``; its exit code, stderr and seconds after the signal."""
    import signal
    import subprocess
    import sys
    import time

    script = ("import importlib, signal, sys, time, duckdb\n"
              "app = importlib.import_module('centile.cli.app')\n"
              f"app.TERM_GRACE_S = {grace}\n"
              "signal.signal(signal.SIGTERM, app._terminated)\n" + body)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(1.0)
    t0 = time.monotonic()
    for _ in range(signals):
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)
    _out, err = p.communicate(timeout=60)
    return p.returncode, err, time.monotonic() - t0


def test_sigterm_stops_a_duckdb_query_in_progress():
    # DuckDB checks for signals while a query runs: the handler's exception stops the query (exit
    # 130); where a library swallows that exception, the watchdog ends the process (exit 143)
    code, err, secs = _child_after_sigterm(
        "con = duckdb.connect()\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    with app._errors():\n"
        "        con.sql('SELECT sum(hash(a)) FROM range(100000000000) t(a)').pl()\n"
        "except BaseException as e:\n"  # typer.Exit
        "    sys.exit(getattr(e, 'exit_code', 99))\n")
    assert (code, "Interrupted; nothing was written.") == (130, err.strip()) or (
        code == 143 and "did not stop within 2 s" in err), err
    assert secs < 10


@pytest.mark.parametrize("signals", [1, 2])
def test_a_run_that_loses_the_sigterm_exception_still_ends(signals):
    # a library that swallows the exception raised in the handler: the watchdog ends the process after
    # the grace period; a second SIGTERM ends it at once
    code, err, secs = _child_after_sigterm(
        "print('ready', flush=True)\n"
        "while True:\n"
        "    try:\n"
        "        time.sleep(0.05)\n"
        "    except KeyboardInterrupt:\n"
        "        pass\n", grace=3.0, signals=signals)
    assert code == 143, err
    if signals == 1:
        assert "SIGTERM, and the run did not stop within 3 s" in err and 2.5 < secs < 10
    else:
        assert "a second SIGTERM" in err and secs < 2.5


def test_stale_temporary_folder_of_a_killed_run_is_removed(data, tmp_path):
    out = tmp_path / "out"
    stale = tmp_path / ".out.centile-tmp-99999"
    stale.mkdir()
    (stale / "features.parquet").write_bytes(b"half")
    run_pipeline(load_config(data=data), out)
    assert not stale.exists()
    assert pl.read_parquet(out / "features.parquet").height > 0


def test_bad_input_exits_1_with_a_clear_message(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    pl.DataFrame({"customer_id": [1, 2], "order_ts": ["2024-01-01", "2024-02-01"]}).write_parquet(
        data / "orders.parquet")
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 1, r.output
    assert "unit_price" in r.stderr and "orders" in r.stderr
    assert not out.exists() or not any(out.iterdir())


def test_unknown_option_exits_1(tmp_path):
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "centile.cli", "run", "--dta", str(tmp_path)],
                       capture_output=True, text=True)
    assert p.returncode == 1 and "No such option" in p.stderr


def test_output_path_that_is_a_file_is_a_user_error(data, tmp_path):
    f = tmp_path / "taken"
    f.write_text("not a folder")
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(f)])
    assert r.exit_code == 1 and "is a file" in r.stderr
    assert f.read_text() == "not a folder"


def test_a_model_that_does_not_fit_skips_its_stage_and_the_run_goes_on(data, tmp_path, monkeypatch):
    from centile.clv import compute as clv
    from centile.clv.models import FitError

    def no_fit(*args, **kwargs):
        raise FitError("BG/NBD did not converge; try penalty = 0.001")

    monkeypatch.setattr(clv, "compute_clv", no_fit)
    res = run_pipeline(load_config(data=data), tmp_path / "out")
    assert res.stages["clv"]["status"] == "skipped" and "did not converge" in res.stages["clv"]["reason"]
    assert res.stages["clv_groups"]["status"] == "skipped"
    assert res.stages["clubs"]["status"] == "ran"
    assert not (tmp_path / "out" / "clv.parquet").exists()
    assert any("did not converge" in n for n in res.notes)


def test_clubs_can_rank_by_the_clv_predictions(data, tmp_path):
    cfg = tmp_path / "centile.toml"
    cfg.write_text(f'data = "{data}"\n[[clubs.club]]\nname = "future_value"\nmetric = "clv_clv"\n'
                   'eligible = "clv_p_alive > 0.5"\n')
    run_pipeline(load_config(cfg), tmp_path / "out")
    clubs = pl.read_parquet(tmp_path / "out" / "clubs.parquet")
    clv = pl.read_parquet(tmp_path / "out" / "clv.parquet")
    top = clubs.filter(pl.col("tier") == 1).join(clv, on="customer_id")
    assert top.height > 0 and (top["p_alive"] > 0.5).all()
    assert top["clv"].min() >= clv.filter(pl.col("p_alive") > 0.5)["clv"].quantile(0.95)


def test_an_interrupt_reported_by_duckdb_or_polars_counts_as_an_interruption():
    from centile.cli.app import _interrupted

    panic = type("PanicException", (BaseException,), {})  # pyo3's, raised when Polars' Rust code meets it
    assert _interrupted(panic("called `Result::unwrap()` on an `Err` value: PyErr { type: <class "
                              "'KeyboardInterrupt'>, value: KeyboardInterrupt('signal 15') }"))
    assert _interrupted(RuntimeError("Query interrupted"))
    assert not _interrupted(panic("index out of bounds"))
    assert not _interrupted(RuntimeError("something else"))
    assert not _interrupted(ValueError("Query interrupted"))
