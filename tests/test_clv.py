"""CLV engine (engine/clv.py): CDNOW golden values, planted-parameter recovery, settings, CLI."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from centile import clv
from centile.backend import open_session
from centile.cli import app
from centile.clv import models as clv_models
from centile.config import load_config
from centile.errors import ConfigError, InputError

CDNOW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cdnow"
needs_cdnow = pytest.mark.skipif(not (CDNOW / "CDNOW_sample.txt").exists(),
                                 reason=f"CDNOW data not found in {CDNOW} (../shared/data/cdnow)")
runner = CliRunner()


def _cdnow_orders(src: Path, dest: Path, id_col: int) -> Path:
    """The whitespace-separated CDNOW file as an orders table: one line per row, order value
    as unit_price (quantity 1); the engine merges same-day rows into one transaction."""
    ids, days, values = [], [], []
    for line in src.read_text().splitlines():
        parts = line.split()
        if not parts or not parts[0].isdigit():
            continue  # the master file's header
        ids.append(int(parts[id_col]))
        days.append(dt.datetime.strptime(parts[id_col + 1], "%Y%m%d"))
        values.append(float(parts[id_col + 3]))
    dest.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"customer_id": ids, "order_ts": days, "unit_price": values}).with_row_index(
        "order_id").write_parquet(dest / "orders.parquet")
    return dest


@pytest.fixture(scope="module")
def cdnow_sample(tmp_path_factory):
    if not (CDNOW / "CDNOW_sample.txt").exists():
        pytest.skip(f"CDNOW data not found in {CDNOW}")
    return _cdnow_orders(CDNOW / "CDNOW_sample.txt", tmp_path_factory.mktemp("cdnow"), 1)


def _run(data: Path, **kw) -> clv.ClvResult:
    cfg = load_config(data=data)
    with open_session(cfg, only=("orders",)) as s:
        return clv.compute_clv(s, clv.clv_settings(cfg, **kw))


# --------------------------------------------------------------------------
# CDNOW (Fader, Hardie & Lee 2005; the README of ../shared/data/cdnow)

@needs_cdnow
def test_cdnow_bgnbd_and_gamma_gamma_published_values(cdnow_sample):
    res = _run(cdnow_sample, calibration_end="1997-09-30", holdout_end="1998-06-30", horizon=39)
    bg, gg = res.model("bgnbd"), res.model("gamma-gamma")
    assert res.customers.height == 2357
    assert res.summary["repeat_transactions"] == 2457
    assert res.customers["holdout_transactions"].sum() == 1882
    assert {k: round(v, 3) for k, v in bg.params.items()} == {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    assert round(bg.loglik, 1) == -9582.4
    assert bg.converged and bg.n == 2357
    assert gg.n == 946
    assert {k: round(v, 2) for k, v in gg.params.items()} == {"p": 6.25, "q": 3.74, "gamma": 15.44}
    assert round(gg.loglik, 2) == -4055.92
    # standard errors are finite and positive; the holdout table adds up
    assert all(0 < v < math.inf for v in bg.se.values())
    h = res.holdout
    assert h.filter(pl.col("frequency") == "all")["actual"].item() == 1882
    assert h.filter(pl.col("frequency") != "all")["predicted"].sum() == pytest.approx(
        h.filter(pl.col("frequency") == "all")["predicted"].item())
    assert 0.8 < res.summary["holdout"]["predicted"] / 1882 < 1.0  # BG/NBD under-forecasts CDNOW a little


@needs_cdnow
def test_cdnow_pareto_nbd_published_values(cdnow_sample):
    res = _run(cdnow_sample, calibration_end="1997-09-30", model="pareto-nbd")
    pn = res.model("pareto-nbd")
    assert {k: round(v, 3) for k, v in pn.params.items()} == {"r": 0.553, "alpha": 10.578, "s": 0.606,
                                                              "beta": 11.669}
    assert round(pn.loglik, 1) == -9595.0
    assert res.customers["transactions_lo"].null_count() == res.customers.height  # no intervals for Pareto/NBD


@needs_cdnow
def test_cdnow_master_fits_and_predicts(tmp_path):
    data = _cdnow_orders(CDNOW / "CDNOW_master.txt", tmp_path / "master", 0)
    for model in clv.MODELS:
        res = _run(data, calibration_end="1997-09-30", holdout_end="1998-06-30", model=model, horizon=39)
        c = res.customers
        assert c.height == 23570
        assert all(m.converged for m in res.models)
        for col in ("p_alive", "expected_transactions", "p_repurchase", "clv", "expected_order_value"):
            assert c[col].is_finite().all(), col
        assert 0.8 < res.summary["holdout"]["predicted"] / res.summary["holdout"]["actual"] < 1.2


# --------------------------------------------------------------------------
# planted parameters

def test_recovers_planted_bgnbd_parameters(tmp_path):
    from centile.synth import SynthParams, generate

    # no campaign-induced orders (they are not part of the BG/NBD process) and a purchase
    # rate low enough that two purchases on one day (merged into one transaction) are rare
    generate(tmp_path, 20_000, 11, params=SynthParams(alpha=12.0, segment_effects=(0.0, 0.0, 0.0, 0.0)))
    truth = json.loads((tmp_path / "truth" / "params.json").read_text())
    assert truth["time_unit"] == "weeks"
    res = _run(tmp_path, time_unit="week")
    fit = res.model("bgnbd")
    for k in ("r", "alpha", "a", "b"):
        z = (fit.params[k] - truth["params"][k]) / fit.se[k]
        assert abs(z) < 3.0, f"{k}: {fit.params[k]:.4f} vs planted {truth['params'][k]} (z = {z:.2f})"


def test_fit_on_simulated_summary_arrays():
    # straight from the BG/NBD process, no data path: estimates within 3 SE
    rng = np.random.default_rng(4)
    x, tx, T = simulate_bgnbd(rng, 30_000, 0.6, 5.0, 1.2, 3.0, 52.0)
    fit = clv.fit_bgnbd(x, tx, T)
    for k, v in zip(("r", "alpha", "a", "b"), (0.6, 5.0, 1.2, 3.0), strict=True):
        assert abs(fit.params[k] - v) < 3 * fit.se[k], k
    # collapsing identical rows changes nothing
    plain = clv.fit_bgnbd(x, tx, T, collapse=False)
    for k in fit.params:
        assert fit.params[k] == pytest.approx(plain.params[k], rel=1e-5)
    assert fit.loglik == pytest.approx(plain.loglik, rel=1e-10)
    assert fit.patterns < plain.patterns
    # a penalty shrinks the parameters
    pen = clv.fit_bgnbd(x, tx, T, penalty=0.01)
    assert sum(v * v for v in pen.params.values()) < sum(v * v for v in fit.params.values())


def simulate_bgnbd(rng, n, r, alpha, a, b, T_max):
    """BG/NBD summaries on a week grid: (x, tx, T) with T uniform on whole weeks."""
    lam = rng.gamma(r, 1 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.integers(1, int(T_max) + 1, n).astype(float)
    x = np.zeros(n)
    tx = np.zeros(n)
    for i in range(n):
        t = 0.0
        while True:
            t += rng.exponential(1 / lam[i])
            if t > T[i]:
                break
            x[i] += 1
            tx[i] = t
            if rng.random() < p[i]:
                break
    return x, np.round(tx), T  # whole weeks, so identical rows exist


# --------------------------------------------------------------------------
# engine behaviour

@pytest.fixture(scope="module")
def small(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    rng = np.random.default_rng(0)
    rows = []
    start = dt.datetime(2023, 1, 1, 9)
    for c in range(400):
        k = int(rng.integers(1, 8))
        days = np.sort(rng.choice(700, k, replace=False))
        for day in days:
            for _line in range(int(rng.integers(1, 3))):  # several lines on one day = one transaction
                rows.append((c, start + dt.timedelta(days=int(day), hours=int(rng.integers(0, 8))),
                             float(rng.gamma(3.0, 10.0))))
    df = pl.DataFrame(rows, schema=["customer_id", "order_ts", "unit_price"], orient="row")
    df.with_row_index("order_id").write_parquet(d / "orders.parquet")
    return d


def test_summary_counts_purchase_days(small):
    cfg = load_config(data=small)
    with open_session(cfg, only=("orders",)) as s:
        sm = clv.summarize(s, dt.date(2024, 6, 30), time_unit="day")
        days = s.frame("SELECT customer_id, count(DISTINCT CAST(order_ts AS DATE)) AS n, "
                       "min(CAST(order_ts AS DATE)) AS f, max(CAST(order_ts AS DATE)) AS l FROM orders "
                       "WHERE CAST(order_ts AS DATE) <= DATE '2024-06-30' GROUP BY 1")
    j = sm.frame.join(days, on="customer_id")
    assert j.height == sm.frame.height == days.height
    assert (j["frequency"] == j["n"] - 1).all()
    assert (j["recency"] == (j["l"] - j["f"]).dt.total_days()).all()
    assert (j["T"] == j.select((pl.lit(dt.date(2024, 6, 30)) - pl.col("f")).dt.total_days())[:, 0]).all()
    assert j.filter(pl.col("frequency") == 0)["monetary_value"].null_count() == (j["frequency"] == 0).sum()


def test_compute_clv_columns_groups_and_units(small):
    cfg = load_config(data=small)
    groups = pl.DataFrame({"customer_id": list(range(400)), "club": ["a" if i % 3 else "b" for i in range(400)]})
    with open_session(cfg, only=("orders",)) as s:
        res = clv.compute_clv(s, clv.clv_settings(cfg, horizon=26), groups=groups)
        days = clv.compute_clv(s, clv.clv_settings(cfg, horizon=182, time_unit="day"))
    c = res.customers
    for col in ("customer_id", "frequency", "recency", "T", "monetary_value", "p_alive", "churn_risk",
                "expected_transactions", "transactions_lo", "transactions_hi", "p_repurchase",
                "expected_order_value", "expected_revenue", "clv"):
        assert col in c.columns
    assert ((c["p_alive"] >= 0) & (c["p_alive"] <= 1)).all()
    assert (c["churn_risk"] + c["p_alive"] - 1).abs().max() < 1e-12
    assert ((c["p_repurchase"] >= 0) & (c["p_repurchase"] <= c["p_alive"] + 1e-12)).all()
    assert (c["transactions_lo"] <= c["transactions_hi"]).all()
    assert (c["clv"] <= c["expected_revenue"] + 1e-9).all()  # discounting only lowers value
    feats = clv.clv_features(res)
    assert feats.columns[0] == "customer_id" and "clv_p_alive" in feats.columns and feats.height == c.height
    g = res.groups
    assert set(g["group"]) == {"a", "b"} and g["customers"].sum() == c.height
    assert g["clv_total"].sum() == pytest.approx(c["clv"].sum())
    # a day-based fit predicts the same expected transactions over the same span
    rate = res.model("bgnbd").params["r"] / res.model("bgnbd").params["alpha"]
    rate_d = days.model("bgnbd").params["r"] / days.model("bgnbd").params["alpha"]
    assert rate_d * 7 == pytest.approx(rate, rel=1e-4)
    np.testing.assert_allclose(days.customers["expected_transactions"], c["expected_transactions"], rtol=1e-4)


def test_predictions_per_partition_on_a_cluster_are_the_bytes_of_one_call(small, monkeypatch):
    """Issue 16: on a cluster each task predicts its partition's customers (summary rows split by
    customer hash, as the Dask backend splits a PerCustomer frame); put back in the summary's order
    they are the same floats as one call over every customer, the holdout's included."""
    from centile.backend.partitions import Partitioning, PerCustomer, split_by_partition
    from centile.backend.session import map_here

    cfg = load_config(data=small)
    st = clv.clv_settings(cfg, calibration_end=dt.date(2024, 3, 31), holdout_end=dt.date(2024, 9, 30))
    calls = []

    def on_workers(s, parts, label, fn, *args, tables=None, progress=None):
        calls.append((label, parts.count, tables))
        if label == "clv":  # the summary, one partition at a time here
            return map_here(s, parts, label, fn, *args)
        frames = split_by_partition(args[0].frame, parts, "BIGINT")
        assert isinstance(args[0], PerCustomer) and sum(f.height for f in frames) == args[0].frame.height
        return [fn(None, p, frames[p], *args[1:]) for p in reversed(range(parts.count))][::-1]

    with open_session(cfg, only=("orders",)) as s:
        here = clv.compute_clv(s, st)
        monkeypatch.setattr(type(s), "distributed", lambda self: True)
        monkeypatch.setattr(type(s), "work_partitions", lambda self: Partitioning(5))
        monkeypatch.setattr(type(s), "map_partitions",
                            lambda self, parts, label, fn, *a, **k: on_workers(self, parts, label, fn, *a, **k))
        there = clv.compute_clv(s, st)
    assert calls == [("clv", 5, ("orders",)), ("clv: predicting", 5, ())]
    assert here.customers.equals(there.customers, null_equal=True)
    assert here.holdout.equals(there.holdout) and here.summary == there.summary
    assert there.customers["holdout_predicted"].null_count() == 0


def test_settings_validation():
    cfg = None
    assert clv.clv_settings(cfg) == clv.ClvSettings()
    s = clv.clv_settings(cfg, model="Pareto/NBD", time_unit="days", horizon=10)
    assert (s.model, s.time_unit, s.horizon) == ("pareto-nbd", "day", 10.0)
    with pytest.raises(ConfigError, match="model"):
        clv.clv_settings(cfg, model="bg")
    with pytest.raises(ConfigError, match="horizon"):
        clv.clv_settings(cfg, horizon=0)
    with pytest.raises(ConfigError, match="margin"):
        clv.clv_settings(cfg, margin=2)
    with pytest.raises(ConfigError, match="calibration_end"):
        clv.clv_settings(cfg, calibration_end="1997-13-01")
    with pytest.raises(ConfigError, match="holdout_end"):
        clv.clv_settings(cfg, calibration_end="1997-09-30", holdout_end="1997-09-01")


def test_config_section_is_parsed(tmp_path, small):
    toml = tmp_path / "c.toml"
    toml.write_text(f'data = "{small}"\n[clv]\nmodel = "pareto-nbd"\nhorizon = 13\nmargin = 0.3\n'
                    'discount_rate_monthly = 0.02\npenalty = 0.001\ncalibration_end = 2024-06-30\n')
    s = clv.clv_settings(load_config(toml))
    assert (s.model, s.horizon, s.margin, s.discount_rate_monthly, s.penalty, s.calibration_end) == (
        "pareto-nbd", 13.0, 0.3, 0.02, 0.001, dt.date(2024, 6, 30))
    toml.write_text(f'data = "{small}"\n[clv]\nhorizont = 13\n')
    with pytest.raises(ConfigError, match="horizont"):
        clv.clv_settings(load_config(toml))


def test_failed_fits_are_clear_errors(small):
    with pytest.raises(clv.FitError, match="no customer has a repeat"):
        clv.fit_bgnbd([0, 0, 0], [0, 0, 0], [5, 6, 7])
    with pytest.raises(clv.FitError, match="diverged|converge"):
        # every customer buys at a fixed rate forever: the heterogeneity parameters run away
        clv.fit_bgnbd([10.0] * 50, [50.0] * 50, [50.0] * 50)
    cfg = load_config(data=small)
    with open_session(cfg, only=("orders",)) as s, pytest.raises(InputError, match="calibration end"):
        clv.summarize(s, dt.date(2030, 1, 1))


def test_discount_steps():
    steps, disc = clv.discount_steps(52, "week", 0.01)
    assert steps.size == 12 and steps[-1] == 52
    assert disc[0] == pytest.approx(1 / 1.01)
    assert disc[-1] == pytest.approx(1.01 ** -(52 * 7 / clv.MONTH_DAYS))


@needs_cdnow
def test_cli_writes_outputs(cdnow_sample, tmp_path):
    out = tmp_path / "out"
    groups = tmp_path / "groups.parquet"
    pl.DataFrame({"customer_id": list(range(1, 2358)), "segment": ["x", "y"] * 1178 + ["x"]}).write_parquet(groups)
    r = runner.invoke(app, ["clv", "--data", str(cdnow_sample), "--out", str(out), "--calibration-end",
                            "1997-09-30", "--holdout-end", "1998-06-30", "--horizon", "39",
                            "--groups", f"{groups}:segment", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["models"][0]["params"]["r"] == pytest.approx(0.243, abs=5e-4)
    for f in ("clv.parquet", "clv_model.json", "clv_holdout.parquet", "clv_groups.parquet", "manifest.json"):
        assert (out / f).exists(), f
    model = json.loads((out / "clv_model.json").read_text())
    assert [m["name"] for m in model["models"]] == ["BG/NBD", "Gamma-Gamma"]
    assert set(model["models"][0]["se"]) == {"r", "alpha", "a", "b"}
    assert pl.read_parquet(out / "clv.parquet").height == 2357
    assert pl.read_parquet(out / "clv_groups.parquet")["customers"].sum() == 2357
    bad = runner.invoke(app, ["clv", "--data", str(cdnow_sample), "--out", str(tmp_path / "o2"),
                              "--model", "nope"])
    assert bad.exit_code == 1 and "model" in bad.output


def test_predict_once_per_distinct_x_and_T_matches_per_customer():
    from centile.kernels import btyd

    rng = np.random.default_rng(9)
    x, tx, T = simulate_bgnbd(rng, 3000, 0.6, 5.0, 1.2, 3.0, 52.0)
    fit = clv.fit_bgnbd(x, tx, T)
    assert clv_models._pairs(x, T) is not None
    got = clv.predict(fit, None, x, tx, T, np.zeros(x.size), horizon=26.0, interval=0.9, fallback_spend=1.0)
    steps, disc = clv.discount_steps(26.0, "week", 0.01)
    want = btyd.bgnbd_predict(fit.values, x, tx, T, 26.0, steps, disc, 0.9)
    np.testing.assert_allclose(got["expected_transactions"], want["expected"], rtol=1e-13)
    np.testing.assert_allclose(got["clv"], want["discounted"], rtol=1e-13)
    np.testing.assert_array_equal(got["transactions_hi"], want["hi"])


def test_same_fit_and_predictions_with_one_and_all_threads(monkeypatch):
    rng = np.random.default_rng(12)
    x, tx, T = simulate_bgnbd(rng, 4000, 0.6, 5.0, 1.2, 3.0, 52.0)
    m = np.where(x > 0, rng.gamma(6.0, 5.0, x.size), 0.0)
    rep = x > 0

    def run():
        bg, gg = clv.fit_bgnbd(x, tx, T), clv.fit_gamma_gamma(x[rep], m[rep])
        return bg, gg, clv.predict(bg, gg, x, tx, T, m, horizon=26.0)

    one = run()
    monkeypatch.setattr(clv_models, "_SERIAL_BELOW", 0)  # the parallel kernels
    many = run()
    for a, b in zip(one[:2], many[:2], strict=True):
        for k in a.params:
            assert a.params[k] == pytest.approx(b.params[k], rel=1e-7)
    for k, v in one[2].items():
        np.testing.assert_allclose(v, many[2][k], rtol=1e-6)
