"""``centile bench``: the JSON document (every stage, baselines, ratios from the medians) and its errors.

No timing is asserted: the figures depend on the machine. The end-to-end test runs one round on
2,000 generated customers without the warm-up."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.bench.measure import BenchOptions, _document
from centile.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    out = work / "bench.json"
    r = runner.invoke(app, ["bench", "--customers", "2000", "--runs", "1", "--no-warmup", "--threads", "2",
                            "--work", str(work), "--out-json", str(out), "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out, work


def test_the_document_has_every_stage_the_baselines_and_ratios_from_the_medians(bench):
    from centile.pipeline import stages

    doc, _out, _work = bench
    assert set(doc["stages"]) == {s.name for s in stages()}
    for name, s in doc["stages"].items():
        assert s["status"] == "ran", (name, s)
        assert s["seconds"] > 0 and s["peak_rss_mb"] > 0 and s["cpu_s"] > 0
        assert s["rows_per_s"] == round(doc["order_lines"] / s["seconds"])
    assert doc["customers"] == 2000 and doc["order_lines"] > 0 and doc["email_events"] > 0
    assert doc["generated"]["customers"] == 2000 and doc["runs"] == 1 and doc["threads"] == 2
    f, c = doc["baselines"]["features"], doc["baselines"]["clubs"]
    assert f["seconds"] == round(f["all_seconds"][0], 3) > 0
    assert f["orders_s"] > 0 and f["email_events_s"] > 0
    assert doc["ratios"]["features"] == round(doc["stages"]["features"]["seconds"] / f["seconds"], 3)
    assert doc["ratios"]["clubs"] == round(doc["centile_clubs"]["seconds"] / c["seconds"], 3)
    assert doc["run"]["peak_rss_mb"] >= max(s["peak_rss_mb"] for s in doc["stages"].values())
    # CPU seconds of the whole run cover its stages', and the CPU ratios come from the CPU medians
    assert doc["run"]["cpu_s"] >= sum(s["cpu_s"] for s in doc["stages"].values())
    assert doc["ratios_cpu"]["features"] == round(doc["stages"]["features"]["cpu_s"] / f["cpu_s"], 3)
    assert doc["ratios_cpu"]["clubs"] == round(doc["centile_clubs"]["cpu_s"] / c["cpu_s"], 3)


def test_the_clubs_baseline_computes_centiles_club_metrics(bench):
    doc, _out, _work = bench
    chk = doc["baseline_check"]
    assert chk["customers_in_one_only"] == 0
    assert set(chk["customers_differing"]) >= {"orders_12m", "max_price_kept_24m", "click_rate_12m",
                                                "premium_margin_12m", "returned_value_12m", "net_revenue_lifetime"}
    assert not any(chk["customers_differing"].values()), chk
    # the same club sizes: members differ only where ties are broken by another hash
    assert doc["baselines"]["clubs"]["members"] == chk["baseline_members"] > 0
    assert chk["members_shared_share"] > 0.9


def test_out_json_is_the_printed_document_and_the_work_folder_is_cleaned(bench):
    doc, out, work = bench
    assert json.loads(out.read_text()) == doc
    assert [p.name for p in work.iterdir()] == ["bench.json"]


def _rec(features_s: float, clubs_s: float, peak: float) -> dict:
    return {"features": {"status": "ran", "seconds": features_s, "cpu_s": features_s / 2, "peak_rss_mb": peak},
            "clubs": {"status": "ran", "seconds": clubs_s, "cpu_s": clubs_s / 2, "peak_rss_mb": peak},
            "steering": {"status": "skipped", "reason": "no [steering] section"}}


def test_medians_peaks_and_ratios_over_three_rounds():
    runs = [{"wall_s": w, "peak_rss_mb": p, "customers": 10, "stages": _rec(fs, cs, p)}
            for w, p, fs, cs in ((10.0, 100.0, 4.0, 1.0), (30.0, 300.0, 6.0, 3.0), (20.0, 200.0, 9.0, 2.0))]
    feats = [{"seconds": s, "cpu_s": s / 4, "orders_s": s - 0.5, "email_events_s": 0.5, "peak_rss_mb": 50.0}
             for s in (1.0, 3.0, 2.0)]
    clubs = [{"wall_s": s, "cpu_s": s / 2, "peak_rss_mb": 70.0} for s in (12.0, 8.0, 10.0)]
    plain = [{"wall_s": s, "process_cpu_s": s / 5, "seconds": s - 1, "members": 5, "peak_rss_mb": 60.0}
             for s in (4.0, 5.0, 40.0)]
    doc = _document(BenchOptions(customers=10, runs=3), None, None, 1000, 10, None, runs, feats, clubs, plain,
                    None, (1.0, 1.0, 1.0), 1.0)
    assert doc["stages"]["features"]["seconds"] == 6.0 and doc["stages"]["features"]["all_seconds"] == [4.0, 6.0, 9.0]
    assert doc["stages"]["features"]["peak_rss_mb"] == 300.0
    assert doc["stages"]["features"]["rows_per_s"] == round(1000 / 6.0)
    assert doc["stages"]["steering"] == {"status": "skipped", "reason": "no [steering] section"}
    assert doc["run"]["seconds"] == 20.0 and doc["run"]["peak_rss_mb"] == 300.0
    # a stage's peak above the process's VmHWM at exit (the runner resets it per stage) counts
    runs[0]["stages"]["clubs"]["peak_rss_mb"] = 900.0
    doc = _document(BenchOptions(customers=10, runs=3), None, None, 1000, 10, None, runs, feats, clubs, plain,
                    None, (1.0, 1.0, 1.0), 1.0)
    assert doc["run"]["peak_rss_mb"] == 900.0 and doc["stages"]["clubs"]["peak_rss_mb"] == 900.0
    assert doc["baselines"]["features"]["seconds"] == 2.0 and doc["baselines"]["clubs"]["seconds"] == 5.0
    assert doc["centile_clubs"]["seconds"] == 10.0
    assert doc["ratios"] == {"features": 3.0, "clubs": 2.0}
    # CPU medians: features stage 3.0 against 0.5 for the scans; clubs 5.0 against 1.0
    assert doc["stages"]["features"]["cpu_s"] == 3.0 and doc["run"]["cpu_s"] is None
    assert doc["ratios_cpu"] == {"features": 6.0, "clubs": 5.0}


@pytest.mark.parametrize("args, words", [
    (["--data", "{tmp}/nowhere"], ["--data", "nowhere", "not a folder"]),
    (["--data", "{tmp}"], ["no orders table found", "orders"]),
    (["--data", "{tmp}", "--customers", "500"], ["--customers", "--data", "one of the two"]),
    ([], ["--customers", "--data"]),
    (["--customers", "500", "--", "--out", "x"], ["--out after --", "--partitions"]),
    (["--customers", "500", "--runs", "0"], ["--runs 0"]),
])
def test_bad_options_and_a_bad_data_folder_exit_1_before_anything_runs(tmp_path, args, words):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = runner.invoke(app, ["bench", *args, "--no-warmup"])
    assert r.exit_code == 1, r.output
    for w in words:
        assert w in r.output, (w, r.output)
    assert list(tmp_path.iterdir()) == [], "nothing may be written"


def test_options_after_the_separator_reach_centile_run(tmp_path):
    r = runner.invoke(app, ["bench", "--customers", "300", "--runs", "1", "--no-warmup", "--work", str(tmp_path),
                            "--", "--no-such-run-option"])
    assert r.exit_code == 1, r.output
    assert "centile run failed" in r.output and "--no-such-run-option" in r.output
    assert list(tmp_path.iterdir()) == []


def test_a_failed_or_killed_step_names_itself_and_the_likely_cause():
    from centile.bench.child import BenchError, run_child

    with pytest.raises(BenchError, match=r"(?s)step y failed with exit code 3:.*boom"):
        run_child("import sys; print('boom', file=sys.stderr); sys.exit(3)", [], what="step y")
    with pytest.raises(BenchError, match="step x was killed by signal SIGKILL .*out-of-memory killer"):
        run_child("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", [], what="step x")
    ok = run_child("import sys; print(sys.argv[1])", ["hello"], what="step z")
    assert ok.stdout.strip() == "hello" and ok.peak_rss_mb > 0 and ok.wall_s > 0


def test_the_completed_rounds_are_kept_when_a_later_round_fails(tmp_path, monkeypatch):
    """A round killed on a shared machine loses only itself: --out-json holds the rounds before it."""
    import centile.bench.measure as measure
    from centile.bench.child import BenchError, ChildRun
    from centile.synth import generate

    generate(tmp_path / "data", 300, seed=2)
    calls = {"centile run": 0}

    def fake(code, args, *, what, env=None):
        if what == "centile run":
            calls[what] += 1
            if calls[what] == 2:
                raise BenchError("centile run was killed by signal SIGKILL")
            out = Path(args[args.index("--out") + 1])
            out.mkdir()
            (out / "manifest.json").write_text(json.dumps({"rows": {"features": 300}, "stages": {
                "features": {"status": "ran", "seconds": 4.0, "peak_rss_mb": 10.0}}}))
            return ChildRun(5.0, 20.0, "", "")
        if what == "the features baseline":
            return ChildRun(1.0, 5.0, json.dumps({"seconds": 2.0, "orders_s": 1.5, "email_events_s": 0.5}), "")
        if what == "the clubs baseline":
            return ChildRun(3.0, 5.0, json.dumps({"seconds": 2.5, "members": 7, "customers": 300}), "")
        return ChildRun(6.0, 30.0, "", "")

    monkeypatch.setattr(measure, "run_child", fake)
    monkeypatch.setattr(measure, "agreement", lambda *a, **k: None)
    out = tmp_path / "partial.json"
    r = runner.invoke(app, ["bench", "--data", str(tmp_path / "data"), "--runs", "3", "--no-warmup",
                            "--out-json", str(out)])
    assert r.exit_code == 1, r.output
    assert "killed" in r.output and "1 completed round(s)" in r.output and "partial.json" in r.output
    doc = json.loads(out.read_text())
    assert doc["runs"] == 1 and doc["runs_requested"] == 3
    assert doc["ratios"] == {"features": 2.0, "clubs": 2.0}


def test_duckdb_draws_no_progress_bar_on_stdout_of_any_connection_centile_opens(tmp_path):
    """DuckDB prints a progress bar on stdout for queries over two seconds, even into a pipe; it
    broke the JSON of ``centile bench --json`` at 1M customers. Every connection centile opens turns
    it off (the baselines' own script too)."""
    from centile.backend.session import connect
    from centile.bench import baselines, measure
    from centile.config import _parser, load_config
    from centile.runtime import duckdb_connect

    def bar(con) -> bool:
        return con.execute("SELECT current_setting('enable_progress_bar')").fetchone()[0]

    pl.DataFrame({"customer_id": [1], "order_ts": ["2024-01-01"], "unit_price": [1.0]}).write_csv(tmp_path / "orders.csv")
    assert not bar(connect(load_config(data=tmp_path)))
    assert not bar(_parser())
    assert not bar(baselines._connect({}))
    assert not bar(duckdb_connect())  # the bench's own connections
    assert "duckdb.connect(" not in Path(measure.__file__).read_text()
