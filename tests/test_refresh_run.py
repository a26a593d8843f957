"""``centile run --state`` (issue 17): the whole pipeline over a refresh state gives the same files as
``centile run`` over the state's batch files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.backend.session import open_session
from centile.cli import app
from centile.clv.compute import compute_clv, write_clv
from centile.config import Config, TableSpec
from centile.errors import InputError
from centile.refresh.baskets import state_baskets
from centile.refresh.clv import state_days

runner = CliRunner()


@pytest.fixture(scope="module")
def batches(tmp_path_factory) -> Path:
    """A small generated history split into order batches by quarter and e-mail batches by half-year."""
    from centile.synth import generate

    root = tmp_path_factory.mktemp("refresh-run")
    data = root / "data"
    generate(data, 300, seed=3, years=1)
    orders = pl.read_parquet(data / "orders" / "*.parquet")
    quarter = orders["order_ts"].dt.quarter()
    for q in range(1, 5):
        orders.filter(quarter == q).write_parquet(root / f"orders-q{q}.parquet")
    email = pl.read_parquet(data / "email_events.parquet")
    half = email["ts"].dt.month() <= 6
    email.filter(half).write_parquet(root / "email-h1.parquet")
    email.filter(~half).write_parquet(root / "email-h2.parquet")
    others = "".join(f'[tables.{t}]\npath = "{data / t}.parquet"\n\n' for t in ("contacts", "products", "customers"))
    (root / "run.toml").write_text(others + "[refresh]\npartitions = 3\n")
    (root / "full.toml").write_text(
        f'[tables.orders]\npath = "{root}/orders-q*.parquet"\n\n'
        f'[tables.email_events]\npath = "{root}/email-h*.parquet"\n\n' + others)
    return root


def _parquet_files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.parquet"))}


def _ok(args: list[str]) -> str:
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return r.stdout


def test_run_over_a_state_writes_the_files_of_a_full_run(batches, tmp_path):
    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), *(str(root / f"orders-q{q}.parquet") for q in (1, 2, 3)),
         "--email-events", str(root / "email-h1.parquet")])
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "s"), "--json"])
    # the next day's run: one more batch of each, the features from the state's cache plus the changes
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q4.parquet"),
         "--email-events", str(root / "email-h2.parquet")])
    doc = json.loads(_ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "s"), "--json"]))
    assert doc["stages"]["features"]["status"] == "ran"  # the ledger changed: not reused
    wm = json.loads((state / "manifest.json").read_text())["watermark"]
    full = json.loads(_ok(["run", "-c", str(root / "full.toml"), "--as-of", wm, "--out", str(tmp_path / "f"),
                           "--json"]))
    ran = {k for k, r in doc["stages"].items() if r["status"] == "ran"}
    assert ran == {k for k, r in full["stages"].items() if r["status"] == "ran"}
    assert {"features", "clv", "clubs", "segments", "baskets"} <= ran
    assert pl.read_parquet(tmp_path / "s" / "features.parquet")["premium_margin_12m"].sum() > 0
    got, want = _parquet_files(tmp_path / "s"), _parquet_files(tmp_path / "f")
    assert got.keys() == want.keys() and "features.parquet" in got
    assert [k for k in got if got[k] != want[k]] == []
    # nothing changed since: every stage is reused, the features' key included
    again = json.loads(_ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "s"), "--json"]))
    assert {r["status"] for r in again["stages"].values()} <= {"reused", "skipped"}
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["as_of"] == wm
    assert manifest["summary"]["inputs"]["refresh_state"]["batches"] == 6
    assert manifest["summary"]["clv"]["purchase_days"] == "refresh state"
    assert manifest["summary"]["baskets"]["lines"] == manifest["summary"]["recommend"]["lines"] == "refresh state"
    # the CLV stage read the state: the same summary with the batch files gone
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in root.glob("orders-q*.parquet"):
        f.rename(moved / f.name)
    try:
        # a session over one stand-in order line (its as_of only); the purchase days are the state's
        line = tmp_path / "line.parquet"
        pl.read_parquet(moved / "orders-q1.parquet").head(1).write_parquet(line)
        cfg = Config(tables=MappingProxyType({"orders": TableSpec("orders", (str(line),), "parquet")}),
                     as_of=dt.date.fromisoformat(wm))
        with open_session(cfg) as s:
            res = compute_clv(s, days=state_days(cfg, state))
        (tmp_path / "alone").mkdir()

        class Staging:
            def path(self, name: str) -> str:
                return str(tmp_path / "alone" / name)

        write_clv(res, Staging())
        assert (tmp_path / "alone" / "clv.parquet").read_bytes() == want["clv.parquet"]
    finally:
        for f in moved.iterdir():
            f.rename(root / f.name)


def test_a_state_without_purchase_days_reads_the_batch_files_for_clv(batches, tmp_path):
    # a state built before purchase days were kept: no `tables` list, no purchases runs
    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q1.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    del doc["tables"]
    for part in doc["parts"]:
        part["runs"].pop("purchases", None)
    (state / "manifest.json").write_text(json.dumps(doc))
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q2.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    assert "tables" not in doc and not any("purchases" in p["runs"] for p in doc["parts"])  # not half filled
    assert not list(state.glob("p*/purchases-*"))
    with pytest.raises(InputError, match=r"built by an earlier centile .* rebuild the state into an empty folder "
                                         r"with `centile ingest --state NEW_DIR"):
        state_days(Config(tables=MappingProxyType({})), state)
    out = tmp_path / "o"
    doc = json.loads(_ok(["run", "-c", cfg, "--state", str(state), "--out", str(out), "--json"]))
    assert doc["stages"]["clv"]["status"] == "ran"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["clv"]["purchase_days"] == "batch files"
    assert any("without purchase days" in n and "rebuild the state" in n for n in manifest["notes"])
    # baskets and recommend read the batch files too, with a note each
    assert manifest["summary"]["baskets"]["lines"] == manifest["summary"]["recommend"]["lines"] == "batch files"
    assert {n.split(":")[0] for n in manifest["notes"] if "without basket lines" in n} == {"baskets", "recommend"}
    with pytest.raises(InputError, match=r"did not keep basket lines.* rebuild the state into an empty folder"):
        state_baskets(Config(tables=MappingProxyType({})), state)
    # the same CLV as from a state that has them
    fresh = tmp_path / "fresh"
    _ok(["ingest", "-c", cfg, "--state", str(fresh), *(str(root / f"orders-q{q}.parquet") for q in (1, 2))])
    _ok(["run", "-c", cfg, "--state", str(fresh), "--out", str(tmp_path / "f")])
    for name in ("clv", "basket_rules", "basket_itemsets", "basket_summary", "recommendations"):
        assert (out / f"{name}.parquet").read_bytes() == (tmp_path / "f" / f"{name}.parquet").read_bytes()


def test_run_over_a_state_refuses_an_as_of_before_its_watermark(batches, tmp_path):
    state = tmp_path / "state"
    _ok(["ingest", "-c", str(batches / "run.toml"), "--state", str(state), str(batches / "orders-q1.parquet")])
    wm = dt.date.fromisoformat(json.loads((state / "manifest.json").read_text())["watermark"])
    r = runner.invoke(app, ["run", "-c", str(batches / "run.toml"), "--state", str(state), "--out",
                            str(tmp_path / "o"), "--as-of", (wm - dt.timedelta(days=1)).isoformat()])
    assert r.exit_code == 1 and f"before the refresh state's watermark {wm}" in r.output
    assert not (tmp_path / "o").exists()


def test_run_over_a_state_names_a_missing_batch_file(batches, tmp_path):
    state, moved = tmp_path / "state", tmp_path / "q1.parquet"
    moved.write_bytes((batches / "orders-q1.parquet").read_bytes())
    _ok(["ingest", "--state", str(state), str(moved)])
    moved.unlink()
    r = runner.invoke(app, ["run", "--state", str(state), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and f"batch file {moved.resolve()}" in r.output and "missing or changed" in r.output


def test_run_over_a_state_computes_baskets_and_recommendations_from_it(batches, tmp_path, monkeypatch):
    # categories, triples, every split, returned lines counted, the evaluation: the same files as
    # over the batch files, and the stages never read an order line from the session
    root, state = batches, tmp_path / "state"
    extra = ('[baskets]\nlevel = "category"\nmax_size = 3\nall_splits = true\nmin_count = 2\n'
             'exclude_returned = false\n\n[recommend]\nlevel = "category"\nk = 3\ncutoff = "{cutoff}"\n')
    orders = sorted(root.glob("orders-q*.parquet"))
    cutoff = pl.read_parquet(orders[2])["order_ts"].min().date()
    (tmp_path / "run.toml").write_text((root / "run.toml").read_text() + extra.format(cutoff=cutoff))
    (tmp_path / "full.toml").write_text((root / "full.toml").read_text() + extra.format(cutoff=cutoff))
    _ok(["ingest", "-c", str(tmp_path / "run.toml"), "--state", str(state), *map(str, orders),
         *(a for e in sorted(root.glob("email-h*.parquet")) for a in ("--email-events", str(e)))])
    wm = json.loads((state / "manifest.json").read_text())["watermark"]
    full = json.loads(_ok(["run", "-c", str(tmp_path / "full.toml"), "--as-of", wm, "--out", str(tmp_path / "f"),
                           "--json"]))

    import centile.baskets.stage as stage

    def no_session_lines(*_a, **_k):
        raise AssertionError("baskets or recommend read the order lines of the session")

    monkeypatch.setattr(stage, "SessionLines", no_session_lines)
    doc = json.loads(_ok(["run", "-c", str(tmp_path / "run.toml"), "--state", str(state), "--out",
                          str(tmp_path / "s"), "--json", "--partitions", "5"]))
    for name in ("baskets", "recommend"):
        assert doc["stages"][name]["status"] == full["stages"][name]["status"] == "ran"
    got, want = _parquet_files(tmp_path / "s"), _parquet_files(tmp_path / "f")
    assert {"basket_rules.parquet", "recommendations.parquet", "recommendation_eval.parquet"} <= got.keys()
    assert pl.read_parquet(tmp_path / "s" / "basket_itemsets.parquet")["size"].max() == 3
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []
