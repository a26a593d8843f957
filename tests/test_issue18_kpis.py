"""Issue 18, items 6 and 7: one definition per KPI with intervals inside their range, and
``[clv] model = "auto"`` choosing between BG/NBD and Pareto/NBD."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from centile.clubs import form_clubs
from centile.config import load_config
from centile.report import kpi_table
from centile.report.kpis import DEFINITIONS, Z95, kpis_section, ratio_interval

# ---------------------------------------------------------------------------
# item 6: KPIs


def _features(n: int = 600, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    orders = rng.poisson(2, n).astype(np.int32)
    gross = np.round(rng.gamma(2, 40, n) * (orders > 0), 2)
    returned = np.round(gross * rng.beta(1, 6, n), 2)
    returned[:5] = 80.0  # returns of earlier purchases: some customers return more than they bought
    sent = rng.integers(0, 15, n).astype(np.int32)
    opened = rng.binomial(sent, 0.3)
    clicked = rng.binomial(opened, 0.3)
    with np.errstate(divide="ignore", invalid="ignore"):
        return pl.DataFrame({
            "customer_id": np.arange(1, n + 1),
            "orders_12m": orders,
            "gross_revenue_12m": gross,
            "returned_value_12m": returned,
            "net_revenue_12m": gross - returned,
            "avg_order_value_12m": np.where(orders > 0, gross / np.maximum(orders, 1), np.nan),
            "return_rate_12m": np.where(gross > 0, returned / np.where(gross > 0, gross, 1), np.nan),
            "emails_sent_12m": sent,
            "open_rate_12m": np.where(sent > 0, opened / np.maximum(sent, 1), np.nan),
            "click_rate_12m": np.where(sent > 0, clicked / np.maximum(sent, 1), np.nan),
            "tenure_days": rng.integers(0, 900, n).astype(np.int32),
        }).with_columns(pl.col("avg_order_value_12m", "return_rate_12m", "open_rate_12m",
                               "click_rate_12m").fill_nan(None))


def _club_cfg(tmp_path, features: pl.DataFrame):
    pl.DataFrame({"customer_id": [1], "order_ts": [None], "unit_price": [1.0]},
                 schema={"customer_id": pl.Int64, "order_ts": pl.Datetime, "unit_price": pl.Float64}
                 ).write_parquet(tmp_path / "orders.parquet")
    f = tmp_path / "centile.toml"
    f.write_text('data = "."\n'
                 '[[clubs.club]]\nname = "big_spenders"\nmetric = "gross_revenue_12m"\nshares = [0.1]\n'
                 '[[clubs.club]]\nname = "readers"\nmetric = "emails_sent_12m"\nshares = [0.2]\n')
    return load_config(f, feature_columns=features.columns)


def test_issue18_kpi_tile_equals_the_club_table_rate(tmp_path):
    """The tile of a club and the club table's row give the same AOV, return, open and click rate."""
    f = _features()
    res = form_clubs(f, _club_cfg(tmp_path, f))
    kt = kpi_table(f, res.clubs.select("customer_id", pl.col("club").cast(pl.String)), "club")
    pairs = {"avg_order_value_12m": "aov_12m", "return_rate_12m": "return_rate_12m",
             "open_rate_12m": "open_rate_12m", "click_rate_12m": "click_rate_12m"}
    for row in res.summary.iter_rows(named=True):
        tile = kt.filter(pl.col("segment") == row["club"]).row(0, named=True)
        assert tile["n"] == row["size"]
        for k, c in pairs.items():
            assert tile[k] == pytest.approx(row[c], rel=1e-12), (row["club"], k)
            assert tile[f"{k}_ci_low"] <= tile[k] <= tile[f"{k}_ci_high"]
        # the club table's ratio of sums, from the members directly
        m = f.join(res.clubs.filter(pl.col("club") == row["club"]), on="customer_id")
        assert row["return_rate_12m"] == pytest.approx(m["returned_value_12m"].sum() / m["gross_revenue_12m"].sum())
        opened = (m["open_rate_12m"].fill_null(0) * m["emails_sent_12m"]).round(0).sum()
        assert row["open_rate_12m"] == pytest.approx(opened / m["emails_sent_12m"].sum())


def _reference(features: pl.DataFrame) -> dict[str, tuple[float, float, float]]:
    """Slow, direct: ratio of sums and the delta-method interval, customer by customer."""
    out = {}
    rows = features.to_dicts()
    for k, (_, _, kind, _) in DEFINITIONS.items():
        ys, xs = [], []
        for r in rows:
            if k == "net_revenue_12m" or k == "orders_12m":
                ys.append(float(r[k]))
                xs.append(1.0)
            elif k == "avg_order_value_12m":
                ys.append(r["gross_revenue_12m"])
                xs.append(float(r["orders_12m"]))
            elif k == "return_rate_12m":
                ys.append(r["returned_value_12m"])
                xs.append(r["gross_revenue_12m"])
            else:
                rate = r[k]
                ys.append(0.0 if rate is None else float(round(rate * r["emails_sent_12m"])))
                xs.append(float(r["emails_sent_12m"]))
        n = len(ys)
        if sum(xs) == 0:
            continue
        R = sum(ys) / sum(xs)
        s2 = sum((y - R * x) ** 2 for y, x in zip(ys, xs, strict=True)) / (n - 1)
        se = math.sqrt(s2 / n) / (sum(xs) / n)
        if kind == "real":
            lo, hi = R - Z95 * se, R + Z95 * se
        elif kind == "nonneg":
            lo, hi = (R * math.exp(-Z95 * se / R), R * math.exp(Z95 * se / R)) if R > 0 else (0.0, Z95 * se)
        else:  # Wilson at the effective sample size
            neff = sum(xs) if se == 0 or R in (0.0, 1.0) else min(sum(xs), R * (1 - R) / se ** 2)
            z2 = Z95 ** 2
            c = (R + z2 / (2 * neff)) / (1 + z2 / neff)
            h = Z95 / (1 + z2 / neff) * math.sqrt(R * (1 - R) / neff + z2 / (4 * neff ** 2))
            lo, hi = max(0.0, c - h), min(1.0, c + h)
        out[k] = (R, lo, hi)
    return out


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3), st.integers(0, 4), st.integers(0, 5),
                          st.integers(0, 5)), min_size=2, max_size=30))
def test_issue18_kpis_match_a_slow_reference_and_stay_in_range(rows):
    """Random small groups with ties, zeros and returns above purchases."""
    orders = np.array([r[0] for r in rows], dtype=np.int32)
    gross = np.array([r[0] * 10.0 for r in rows])
    returned = np.array([r[1] * 7.0 for r in rows])
    sent = np.array([r[2] + r[3] for r in rows], dtype=np.int32)
    opened = np.array([r[3] for r in rows])
    clicked = np.minimum(opened, np.array([r[4] for r in rows]))
    with np.errstate(divide="ignore", invalid="ignore"):
        f = pl.DataFrame({
            "customer_id": np.arange(len(rows)), "orders_12m": orders, "gross_revenue_12m": gross,
            "returned_value_12m": returned, "net_revenue_12m": gross - returned, "emails_sent_12m": sent,
            "open_rate_12m": np.where(sent > 0, opened / np.maximum(sent, 1), np.nan),
            "click_rate_12m": np.where(sent > 0, clicked / np.maximum(sent, 1), np.nan),
        }).with_columns(pl.col("open_rate_12m", "click_rate_12m").fill_nan(None))
    kt = kpi_table(f, None, None).filter(pl.col("segment") == "all customers").row(0, named=True)
    ref = _reference(f)
    for k, (_, _, kind, _) in DEFINITIONS.items():
        if k not in ref:
            assert kt[k] is None
            continue
        r, lo, hi = ref[k]
        assert kt[k] == pytest.approx(r, rel=1e-9, abs=1e-12)
        assert kt[f"{k}_ci_low"] == pytest.approx(lo, rel=1e-6, abs=1e-9)
        assert kt[f"{k}_ci_high"] == pytest.approx(hi, rel=1e-6, abs=1e-9)
        assert kt[f"{k}_ci_low"] <= kt[k] + 1e-12 and kt[k] <= kt[f"{k}_ci_high"] + 1e-12
        if kind in ("nonneg", "proportion"):
            assert kt[f"{k}_ci_low"] >= 0.0
        if kind == "proportion":
            assert kt[f"{k}_ci_high"] <= 1.0


@given(st.integers(1, 10**6), st.data())
def test_issue18_email_counts_are_recovered_exactly_from_the_rates(sent, data):
    opened = data.draw(st.integers(0, sent))
    assert round((opened / sent) * sent) == opened


def test_issue18_wilson_interval_matches_the_textbook_value():
    # Wilson (1927) for 5 of 10: 0.2366 to 0.7634; with se = the binomial one, n_eff = n
    lo, hi = ratio_interval(0.5, math.sqrt(0.25 / 10), "proportion", 10.0)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    # a clustered sample (larger se) gives a wider interval, never beyond [0, 1]
    lo2, hi2 = ratio_interval(0.02, 0.05, "proportion", 1000.0)
    assert 0.0 <= lo2 < 0.02 < hi2 <= 1.0 and hi2 - lo2 > 0.05
    assert ratio_interval(0.0, 0.0, "proportion", 50.0)[0] == 0.0


def test_issue18_return_rate_tile_has_no_negative_bound_and_the_note_explains_rates_above_100(tmp_path):
    """The issue's case: a few customers returning far more than they bought in the window."""
    f = _features(n=40, seed=2)
    f = f.with_columns(pl.when(pl.col("customer_id") <= 3).then(pl.lit(900.0))
                       .otherwise(pl.col("returned_value_12m")).alias("returned_value_12m"))
    kt = kpi_table(f, None, None).row(0, named=True)
    assert kt["return_rate_12m"] > 1.0 and kt["return_rate_12m_ci_low"] > 0.0
    f.write_parquet(tmp_path / "features.parquet")
    html = kpis_section(tmp_path, None)
    assert "ratio of sums" in html and "can exceed 100 %" in html
    assert "normal approximation" not in html


# ---------------------------------------------------------------------------
# item 7: [clv] model = "auto"

import datetime as dt  # noqa: E402
import json  # noqa: E402

from centile.backend.session import open_session  # noqa: E402
from centile.clv import compute as clv_compute  # noqa: E402
from centile.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """800 customers from a BG/NBD process over two years (heterogeneous rates and dropout, so both
    models are identified), one order line per purchase day."""
    d = tmp_path_factory.mktemp("auto")
    rng = np.random.default_rng(18)
    n = 800
    lam, p, first = rng.gamma(0.8, 1 / 40.0, n), rng.beta(1.0, 4.0, n), rng.integers(0, 365, n)
    start = dt.datetime(2023, 1, 1, 9)
    rows = []
    for c in range(n):
        t = float(first[c])
        days = [t]
        while True:
            t += rng.exponential(1 / lam[c])
            if t >= 730:
                break
            days.append(t)
            if rng.random() < p[c]:
                break
        for day in np.unique(np.floor(days)):
            rows.append((c, start + dt.timedelta(days=int(day)), float(rng.gamma(3.0, 10.0))))
    pl.DataFrame(rows, schema=["customer_id", "order_ts", "unit_price"], orient="row").with_row_index(
        "order_id").write_parquet(d / "orders.parquet")
    return d


def _clv(data, **kw) -> clv_compute.ClvResult:
    cfg = load_config(data=data)
    with open_session(cfg, only=("orders",)) as s:
        return clv_compute.compute_clv(s, clv_compute.clv_settings(cfg, **kw))


class _Staging:
    def __init__(self, root):
        self.root = root

    def path(self, name):
        return self.root / name


def test_issue18_auto_model_settings():
    assert clv_compute.clv_settings(None, model="auto").model == "auto"
    assert clv_compute.clv_settings(None, model="AUTO").model == "auto"
    with pytest.raises(ConfigError, match="'auto'"):
        clv_compute.clv_settings(None, model="best")


def test_issue18_auto_model_without_holdout_keeps_the_larger_log_likelihood(orders, tmp_path):
    from centile.clv.models import fit_bgnbd, fit_pareto_nbd

    res = _clv(orders, model="auto")
    sel = res.selection
    with open_session(load_config(data=orders), only=("orders",)) as s:
        f = clv_compute.summarize(s, res.calibration_end).frame
    x, tx, T = (f[c].to_numpy() for c in ("frequency", "recency", "T"))
    ll = {"bgnbd": fit_bgnbd(x, tx, T).loglik, "pareto-nbd": fit_pareto_nbd(x, tx, T).loglik}
    best = max(ll, key=ll.get)
    assert sel["criterion"] == "log-likelihood" and sel["chosen"] == best
    assert res.models[0].model == best and res.models[0].loglik == pytest.approx(ll[best])
    assert "four parameters" in sel["reason"] and sel["reason"] in res.notes
    assert {c["model"]: c["loglik"] for c in sel["candidates"]} == pytest.approx(ll)
    # the same customers' predictions as an explicit run of the chosen model
    direct = _clv(orders, model=best)
    # equal to 1e-9: in a full-suite run the two fits have differed in the last bits (not yet
    # root-caused; reruns of one configuration are byte-identical, see tests/test_run.py)
    from polars.testing import assert_frame_equal

    assert_frame_equal(res.customers, direct.customers, check_exact=False, rel_tol=1e-9, abs_tol=1e-12)
    # recorded in clv_model.json and shown in the report
    clv_compute.write_clv(res, _Staging(tmp_path))
    doc = json.loads((tmp_path / "clv_model.json").read_text())
    assert doc["settings"]["model"] == "auto" and doc["selection"]["chosen"] == best
    assert doc["models"][0]["model"] == best and doc["summary"]["selection"]["criterion"] == "log-likelihood"
    from centile.clv.report import clv_section

    page = clv_section(tmp_path)
    assert f'data-chosen="{best}"' in page and 'id="clv-candidates"' in page and "four parameters" in page


def test_issue18_auto_model_with_holdout_keeps_the_smaller_holdout_error(orders):
    res = _clv(orders, model="auto", calibration_end="2024-06-30", holdout_end="2024-11-30")
    sel = res.selection
    assert sel["criterion"] == "holdout error"
    err = {c["model"]: c["holdout_mae_per_customer"] for c in sel["candidates"]}
    assert set(err) == {"bgnbd", "pareto-nbd"}
    assert err[sel["chosen"]] == min(err.values())
    assert res.models[0].model == sel["chosen"]
    # the chosen model's holdout error is the one the run reports
    assert res.summary["holdout"]["mae_per_customer"] == pytest.approx(err[sel["chosen"]])
    assert "holdout error" in sel["reason"] and sel["reason"] in res.notes


def test_issue18_auto_model_falls_back_when_one_model_does_not_fit(orders, monkeypatch):
    def fails(*a, **k):
        raise clv_compute.FitError("Pareto/NBD fit: planted failure")

    monkeypatch.setitem(clv_compute._FITS, "pareto-nbd", fails)
    res = _clv(orders, model="auto")
    assert res.selection["chosen"] == "bgnbd" and "planted failure" in res.selection["reason"]
    monkeypatch.setitem(clv_compute._FITS, "bgnbd", fails)
    with pytest.raises(clv_compute.FitError, match="neither model fits"):
        _clv(orders, model="auto")
