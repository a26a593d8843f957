"""``centile run --state`` (issue 17): the whole pipeline over a refresh state gives the same files as
``centile run`` over the state's batch files."""

from __future__ import annotations

import datetime as dt
import json
import tomllib
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

#: half a year of 300 customers barely identifies BG/NBD: without a penalty its fit ends on a flat
#: ridge (gradient about 1e-5) and converges or not with the machine's floating-point rounding
CLV = "[clv]\npenalty = 0.01\n\n"
#: a steering stage with categories on a medium (the category spend), the synthetic data's unit_cost
#: (the costed spend) and contacts with medium (the response counts)
STEERING = ("[steering]\nperiods = 4\nresponse_days = 10\n\n"
            '[steering.media.catalogue]\ncost = 1.2\ncategories = ["fashion", "home"]\n\n'
            "[steering.media.email]\ncost = 0.01\n\n")


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
    others = "".join(f'[tables.{t}]\npath = "{data / t}.parquet"\n\n'
                     for t in ("contacts", "products", "customers", "touchpoints"))
    others += CLV + STEERING
    (root / "run.toml").write_text(others + "[refresh]\npartitions = 3\n")
    (root / "full.toml").write_text(
        f'[tables.orders]\npath = "{root}/orders-q*.parquet"\n\n'
        f'[tables.email_events]\npath = "{root}/email-h*.parquet"\n\n' + others)
    return root


@pytest.fixture(scope="module")
def fresh_q12(batches, tmp_path_factory) -> Path:
    """The output folder of ``run --state`` over a state built now from the first two quarters: what a
    state that keeps every table gives, for the tests of states built before a table was kept."""
    root = tmp_path_factory.mktemp("fresh-q12")
    cfg = str(batches / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(root / "state"),
         *(str(batches / f"orders-q{q}.parquet") for q in (1, 2))])
    _ok(["run", "-c", cfg, "--state", str(root / "state"), "--out", str(root / "out")])
    return root / "out"


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
    assert {"features", "clv", "clubs", "segments", "baskets", "steering", "uplift", "attribution"} <= ran
    assert pl.read_parquet(tmp_path / "s" / "features.parquet")["premium_margin_12m"].sum() > 0
    got, want = _parquet_files(tmp_path / "s"), _parquet_files(tmp_path / "f")
    assert got.keys() == want.keys() and "features.parquet" in got
    assert [k for k in got if got[k] != want[k]] == []
    # every stage read the order lines and e-mail events from the state: the batch files were not validated
    inputs = json.loads((tmp_path / "s" / "manifest.json").read_text())["summary"]["inputs"]
    assert inputs["read_from_refresh_state"] == ["orders", "email_events"]
    # nothing changed since: every stage is reused, the features' key included
    again = json.loads(_ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "s"), "--json"]))
    assert {r["status"] for r in again["stages"].values()} <= {"reused", "skipped"}
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["as_of"] == wm
    assert manifest["summary"]["inputs"]["refresh_state"]["batches"] == 6
    assert manifest["summary"]["clv"]["purchase_days"] == "refresh state"
    assert manifest["summary"]["steering"]["order_history"] == "refresh state"
    assert (tmp_path / "s" / "steering.json").read_text() == (tmp_path / "f" / "steering.json").read_text()
    assert manifest["summary"]["uplift"]["orders"] == manifest["summary"]["attribution"]["orders"] == "refresh state"
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
        # the run's [clv] settings, orders only
        cfg = Config(tables=MappingProxyType({"orders": TableSpec("orders", (str(line),), "parquet")}),
                     as_of=dt.date.fromisoformat(wm), sections=MappingProxyType(tomllib.loads(CLV)))
        with open_session(cfg) as s:
            res = compute_clv(s, days=state_days(cfg, state))
        (tmp_path / "alone").mkdir()

        class Staging:
            def path(self, name: str) -> str:
                return str(tmp_path / "alone" / name)

        write_clv(res, Staging())
        assert (tmp_path / "alone" / "clv.parquet").read_bytes() == want["clv.parquet"]
        # and so did steering: its plan from the state's history, the session's contacts and customers
        _steering_alone(root, state, line, wm, tmp_path / "f", Staging())
        for name in ("affinity", "budgets", "plan", "plan_summary"):
            assert (tmp_path / "alone" / f"{name}.parquet").read_bytes() == want[f"{name}.parquet"], name
        _uplift_and_attribution_alone(root, state, tmp_path, line, wm, want)
    finally:
        for f in moved.iterdir():
            f.rename(root / f.name)


def _steering_alone(root: Path, state: Path, line: Path, wm: str, full: Path, staging) -> None:
    """What the steering stage computes over a session of one stand-in order line (its as_of only)
    with the order history of the refresh state, from the full run's CLV and segments."""
    from centile.config import load_config
    from centile.refresh.steering import state_history
    from centile.steering.compute import write_steering
    from centile.steering.job import steer
    from centile.steering.settings import steering_settings

    cfg = load_config(root / "run.toml", as_of=wm)
    cfg = cfg.with_(tables=MappingProxyType({**cfg.tables, "orders": TableSpec("orders", (str(line),), "parquet")}))
    clv = pl.read_parquet(full / "clv.parquet", columns=["customer_id", "frequency", "expected_order_value", "clv"])
    seg = pl.read_parquet(full / "segments.parquet", columns=["customer_id", "rfm_segment"])
    with open_session(cfg) as s:
        res = steer(s, cfg, steering_settings(cfg), clv, seg, history=state_history(cfg, state, s))
    write_steering(res, staging)


def _uplift_and_attribution_alone(root: Path, state: Path, tmp_path: Path, line: Path, wm: str,
                                  want: dict[str, bytes]) -> None:
    """Uplift and attribution from the state's order totals over a session of one stand-in order line
    (the batch files are gone) write the files of the full run."""
    from centile.attribution.compute import (
        attribution_from_session,
        attribution_settings,
        segment_columns,
        write_attribution,
    )
    from centile.config import load_config
    from centile.refresh.order_totals import StateOrders
    from centile.refresh.state import read_manifest
    from centile.uplift.compute import uplift_from_session, write_uplift
    from centile.uplift.stage import PRE_TREATMENT_BREAKDOWNS

    base = load_config(root / "run.toml")  # contacts, products, customers, touchpoints
    cfg = base.with_(tables=MappingProxyType({**base.tables, "orders": TableSpec("orders", (str(line),), "parquet")}),
                     as_of=dt.date.fromisoformat(wm))
    orders = StateOrders.of(state.resolve(), read_manifest(state.resolve()))
    out = tmp_path / "alone-ua"
    out.mkdir()

    class Staging:
        def path(self, name: str) -> str:
            return str(out / name)

    segments = pl.read_parquet(tmp_path / "f" / "segments.parquet")
    clubs = pl.read_parquet(tmp_path / "f" / "clubs.parquet")
    with open_session(cfg) as s:
        seg = segments.select("customer_id", *(c for c in PRE_TREATMENT_BREAKDOWNS if c in segments.columns))
        up = uplift_from_session(s, cfg, seg, orders=orders)
        write_uplift(up, Staging())
        st = attribution_settings(cfg)
        att = attribution_from_session(s, st, segment_columns([segments, clubs], st.segments), up.uplift,
                                       orders=orders)
        write_attribution(att, Staging())
    got = _parquet_files(out)
    assert {"uplift.parquet", "attribution.parquet", "attribution_removal.parquet"} <= got.keys()
    assert [k for k in got if got[k] != want[k]] == []


def test_run_over_a_state_on_a_cluster_writes_the_local_files(batches, cluster, tmp_path):
    # on a Dask cluster the tasks read the state's tables (basket lines, order totals, ...) from the
    # shared folder: the same bytes as the local run over the same state, no batch file validated
    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), *(str(p) for p in sorted(root.glob("orders-q*.parquet"))),
         "--email-events", str(root / "email-h1.parquet"), "--email-events", str(root / "email-h2.parquet")])
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "local")])
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "dask"), "--backend", "dask",
         "--scheduler", cluster[0].scheduler_address])
    got, want = _parquet_files(tmp_path / "dask"), _parquet_files(tmp_path / "local")
    assert got.keys() == want.keys() and {"features.parquet", "plan.parquet", "basket_rules.parquet", "recommendations.parquet", "uplift.parquet"} <= got.keys()
    assert [k for k in got if got[k] != want[k]] == []
    manifest = json.loads((tmp_path / "dask" / "manifest.json").read_text())
    assert manifest["summary"]["inputs"]["read_from_refresh_state"] == ["orders", "email_events"]
    assert manifest["stages"]["features"]["network"]["tasks"] > 0  # it did run on the cluster


def test_a_state_without_purchase_days_reads_the_batch_files_for_clv(batches, fresh_q12, tmp_path):
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
    for name in ("clv", "basket_rules", "basket_itemsets", "basket_summary", "recommendations"):
        assert (out / f"{name}.parquet").read_bytes() == (fresh_q12 / f"{name}.parquet").read_bytes()


def test_a_state_without_the_steering_history_reads_the_batch_files_for_steering(batches, fresh_q12, tmp_path):
    # a state built before the steering history was kept: its `tables` list has purchase days only
    from centile.refresh.steering import TABLES, state_history

    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q1.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    doc["tables"] = [t for t in doc["tables"] if t not in TABLES]
    for part in doc["parts"]:
        for t in TABLES:
            part["runs"].pop(t, None)
    (state / "manifest.json").write_text(json.dumps(doc))
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q2.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    assert "purchases" in doc["tables"] and not set(TABLES) & set(doc["tables"])
    assert not any(t in p["runs"] for p in doc["parts"] for t in TABLES)  # not half filled
    assert not list(state.glob("p*/steering_*"))
    with pytest.raises(InputError, match=r"did not keep the steering history .* rebuild the state into an "
                                         r"empty folder with `centile ingest --state NEW_DIR"):
        state_history(Config(tables=MappingProxyType({})), state, None)
    out = tmp_path / "o"
    doc = json.loads(_ok(["run", "-c", cfg, "--state", str(state), "--out", str(out), "--json"]))
    assert doc["stages"]["steering"]["status"] == "ran"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["steering"]["order_history"] == "batch files"
    assert manifest["summary"]["clv"]["purchase_days"] == "refresh state"
    assert any(n.startswith("steering: ") and "without the steering history" in n and "rebuild the state" in n
               for n in manifest["notes"])
    # the same plan as from a state that has the history
    assert json.loads((fresh_q12 / "manifest.json").read_text())["summary"]["steering"]["order_history"] == \
        "refresh state"
    for name in ("affinity", "budgets", "plan", "plan_summary", "plan_contacts"):
        assert (out / f"{name}.parquet").read_bytes() == (fresh_q12 / f"{name}.parquet").read_bytes(), name


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


def test_run_over_a_state_writes_the_batches_rejects_from_the_state(batches, tmp_path):
    # dirty batches: a rejected line, and a line of the first batch sent again in the second
    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    q1 = pl.read_parquet(root / "orders-q1.parquet")
    bad = q1.head(1).with_columns(pl.lit(-1.0).alias("unit_price"))
    first, second = tmp_path / "b1.parquet", tmp_path / "b2.parquet"
    pl.concat([q1, bad]).write_parquet(first)
    pl.concat([pl.read_parquet(root / "orders-q2.parquet"), q1.slice(5, 2)]).write_parquet(second)
    _ok(["ingest", "-c", cfg, "--state", str(state), str(first), "--email-events", str(root / "email-h1.parquet")])
    _ok(["ingest", "-c", cfg, "--state", str(state), str(second)])
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "s")])
    # the same state without its rejects (as one built before they were kept): the session's, over the files
    doc = json.loads((state / "manifest.json").read_text())
    del doc["rejects"], doc["inputs"]
    (state / "manifest.json").write_text(json.dumps(doc))
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(tmp_path / "f")])
    got, want = (pl.read_parquet(tmp_path / o / "rejects.parquet") for o in ("s", "f"))
    assert sorted(got["reason"].to_list()) == ["duplicate line", "duplicate line", "unit_price is negative"]
    assert (tmp_path / "s" / "rejects.parquet").read_bytes() == (tmp_path / "f" / "rejects.parquet").read_bytes()
    inputs = [json.loads((tmp_path / o / "manifest.json").read_text())["summary"]["inputs"] for o in ("s", "f")]
    assert inputs[0]["tables"]["orders"]["rows_rejected"] == 3
    assert [i["batch_rejects"] for i in inputs] == ["refresh state", "batch files"]
    assert inputs[0]["tables"] == inputs[1]["tables"] and inputs[0]["rows_rejected"] == inputs[1]["rows_rejected"]


def test_stages_that_read_the_state_leave_the_batch_files_unvalidated(batches, tmp_path):
    # the stages that read order lines and e-mail events all read them from the state here: the
    # session registers the batch files (their columns) but validates neither
    from centile.pipeline import stage as stage_mod
    from centile.pipeline.runner import execute
    from centile.refresh.run import run_config

    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), *(str(root / f"orders-q{q}.parquet") for q in range(1, 5)),
         "--email-events", str(root / "email-h1.parquet"), "--email-events", str(root / "email-h2.parquet")])
    from centile.config import load_config

    base = load_config(root / "run.toml")
    wanted = [s for s in stage_mod.stages() if s.name in ("features", "clv", "clubs", "segments", "clv_groups")]
    run_cfg, option = run_config(base, state)
    res = execute(wanted, run_cfg, tmp_path / "s", options={"refresh_state": option})
    assert {k for k, r in res.stages.items() if r["status"] == "ran"} == {s.name for s in wanted}
    inputs = json.loads((tmp_path / "s" / "manifest.json").read_text())["summary"]["inputs"]
    assert inputs["read_from_refresh_state"] == ["orders", "email_events"]
    assert inputs["batch_rejects"] == "refresh state" and inputs["tables"]["orders"]["rows_read"] > 0
    full_cfg = load_config(root / "full.toml").with_(as_of=run_cfg.as_of)
    execute(wanted, full_cfg, tmp_path / "f")
    got, want = _parquet_files(tmp_path / "s"), _parquet_files(tmp_path / "f")
    assert got.keys() == want.keys() and {"features.parquet", "clv.parquet", "rejects.parquet"} <= got.keys()
    assert [k for k in got if got[k] != want[k]] == []
    full = json.loads((tmp_path / "f" / "manifest.json").read_text())["summary"]["inputs"]["tables"]
    for t in ("orders", "email_events"):  # the same counts as a read of the files (other paths)
        assert {k: v for k, v in inputs["tables"][t].items() if k != "files"} == \
               {k: v for k, v in full[t].items() if k != "files"}


def test_a_state_without_order_totals_reads_the_batch_files_for_uplift_and_attribution(batches, fresh_q12, tmp_path):
    # a state built before order totals were kept: its tables list lacks them, no order_totals runs
    root, state = batches, tmp_path / "state"
    cfg = str(root / "run.toml")
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q1.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    doc["tables"].remove("order_totals")
    for part in doc["parts"]:
        part["runs"].pop("order_totals", None)
    (state / "manifest.json").write_text(json.dumps(doc))
    _ok(["ingest", "-c", cfg, "--state", str(state), str(root / "orders-q2.parquet")])
    doc = json.loads((state / "manifest.json").read_text())
    assert not any("order_totals" in p["runs"] for p in doc["parts"])  # not half filled
    assert not list(state.glob("p*/order_totals-*"))
    out = tmp_path / "o"
    _ok(["run", "-c", cfg, "--state", str(state), "--out", str(out)])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["uplift"]["orders"] == manifest["summary"]["attribution"]["orders"] == "batch files"
    for stage in ("uplift", "attribution"):
        assert any(n.startswith(f"{stage}: ") and "without order totals" in n and "rebuild the state" in n
                   for n in manifest["notes"])
    # the same files as from a state that has them
    assert json.loads((fresh_q12 / "manifest.json").read_text())["summary"]["uplift"]["orders"] == "refresh state"
    got, want = _parquet_files(out), _parquet_files(fresh_q12)
    assert {"uplift.parquet", "attribution.parquet"} <= got.keys()
    assert [k for k in got if k.startswith(("uplift", "attribution")) and got[k] != want[k]] == []


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

    import centile.baskets.parts as parts  # the stages import SessionLines from it when they run

    def no_session_lines(*_a, **_k):
        raise AssertionError("baskets or recommend read the order lines of the session")

    monkeypatch.setattr(parts, "SessionLines", no_session_lines)
    doc = json.loads(_ok(["run", "-c", str(tmp_path / "run.toml"), "--state", str(state), "--out",
                          str(tmp_path / "s"), "--json", "--partitions", "5"]))
    for name in ("baskets", "recommend"):
        assert doc["stages"][name]["status"] == full["stages"][name]["status"] == "ran"
    got, want = _parquet_files(tmp_path / "s"), _parquet_files(tmp_path / "f")
    assert {"basket_rules.parquet", "recommendations.parquet", "recommendation_eval.parquet"} <= got.keys()
    assert pl.read_parquet(tmp_path / "s" / "basket_itemsets.parquet")["size"].max() == 3
    assert got.keys() == want.keys()
    assert [k for k in got if got[k] != want[k]] == []
