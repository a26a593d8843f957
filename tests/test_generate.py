"""Tests of the synthetic data generator: contract, determinism, integrity, planted truth."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from centile.errors import ConfigError
from centile.kernels import synth
from centile.synth import GenerateResult, SynthParams, generate

N = 20_000
CHUNK = 7_000  # three order parts
SEED = 11
END = date(2025, 12, 31)
WINDOW_START = datetime(2023, 1, 1)
WINDOW_STOP = datetime(2026, 1, 1)

# the data contract, spelled out independently of the generator
CONTRACT = {
    "customers.parquet": {"customer_id": "BIGINT", "signup_ts": "TIMESTAMP",
                          "birth_year": "INTEGER", "gender": "VARCHAR", "region": "VARCHAR",
                          "postal_code": "VARCHAR"},
    "products.parquet": {"product_id": "BIGINT", "category": "VARCHAR", "list_price": "DOUBLE",
                         "market_price": "DOUBLE", "unit_cost": "DOUBLE"},
    "orders/*.parquet": {"customer_id": "BIGINT", "order_id": "BIGINT", "order_ts": "TIMESTAMP",
                         "product_id": "BIGINT", "category": "VARCHAR", "quantity": "INTEGER",
                         "unit_price": "DOUBLE", "unit_cost": "DOUBLE",
                         "returned_quantity": "INTEGER", "channel": "VARCHAR"},
    "email_events.parquet": {"customer_id": "BIGINT", "campaign_id": "BIGINT",
                             "ts": "TIMESTAMP", "event": "VARCHAR"},
    "contacts.parquet": {"customer_id": "BIGINT", "campaign_id": "BIGINT",
                         "sent_ts": "TIMESTAMP", "medium": "VARCHAR", "cost": "DOUBLE",
                         "group": "VARCHAR"},
    "touchpoints.parquet": {"customer_id": "BIGINT", "ts": "TIMESTAMP", "channel": "VARCHAR"},
}
POLARS_TYPES = {"BIGINT": pl.Int64, "INTEGER": pl.Int32, "DOUBLE": pl.Float64,
                "VARCHAR": pl.String, "TIMESTAMP": pl.Datetime("us")}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[GenerateResult, Path, list[tuple[int, int]]]:
    out = tmp_path_factory.mktemp("gen") / "data"
    calls: list[tuple[int, int]] = []
    res = generate(out, N, SEED, end=END, params=SynthParams(chunk_size=CHUNK),
                   progress=lambda d, t: calls.append((d, t)))
    return res, out, calls


@pytest.fixture(scope="module")
def t(data) -> dict[str, pl.DataFrame]:
    _, out, _ = data
    return {
        "customers": pl.read_parquet(out / "customers.parquet"),
        "products": pl.read_parquet(out / "products.parquet"),
        "orders": pl.read_parquet(out / "orders" / "*.parquet"),
        "email": pl.read_parquet(out / "email_events.parquet"),
        "contacts": pl.read_parquet(out / "contacts.parquet"),
        "touch": pl.read_parquet(out / "touchpoints.parquet"),
        "truth": pl.read_parquet(out / "truth" / "customers.parquet"),
        "induced": pl.read_parquet(out / "truth" / "induced_orders.parquet"),
    }


@pytest.fixture(scope="module")
def params(data) -> dict:
    _, out, _ = data
    return json.loads((out / "truth" / "params.json").read_text())


def _read_all(out: Path) -> dict[str, pl.DataFrame]:
    files = sorted(p for p in out.rglob("*.parquet"))
    return {str(p.relative_to(out)): pl.read_parquet(p) for p in files}


def _order_values(t) -> pl.DataFrame:
    """Gross value and flags per order (negative return lines excluded)."""
    induced = t["induced"].select("order_id", induced=pl.lit(True))
    return (t["orders"].filter(pl.col("quantity") > 0)
            .group_by("order_id")
            .agg(pl.col("customer_id").first(), pl.col("order_ts").first(),
                 value=(pl.col("quantity") * pl.col("unit_price")).sum())
            .join(induced, on="order_id", how="left")
            .with_columns(pl.col("induced").fill_null(False)))


# --------------------------------------------------------------------------- contract


def test_result_layout_and_progress(data, t):
    res, out, calls = data
    assert res.out == out and res.seconds > 0
    parts = sorted(p.name for p in (out / "orders").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert {p.name for p in (out / "truth").iterdir()} == {"params.json", "customers.parquet",
                                                           "induced_orders.parquet"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging left behind"
    assert res.rows["customers"] == t["customers"].height == N
    assert res.rows["orders"] == t["orders"].height
    assert res.rows["email_events"] == t["email"].height
    assert res.rows["contacts"] == t["contacts"].height
    assert res.rows["touchpoints"] == t["touch"].height
    assert res.rows["products"] == t["products"].height
    assert calls == [(7_000, N), (14_000, N), (N, N)]
    # about 20 order lines per customer
    assert 15 <= t["orders"].height / N <= 26


@pytest.mark.parametrize("table", sorted(CONTRACT))
def test_schema_exact(data, table):
    _, out, _ = data
    expected = CONTRACT[table]
    rel = duckdb.sql(f"SELECT * FROM read_parquet('{out / table}')")
    assert dict(zip(rel.columns, map(str, rel.types), strict=True)) == expected
    for path in sorted(out.glob(table)):
        schema = pl.read_parquet_schema(path)
        assert dict(schema) == {k: POLARS_TYPES[v] for k, v in expected.items()}, path


def test_value_domains(t, params):
    cu, pr, o, e, c, tp = (t[k] for k in ("customers", "products", "orders", "email", "contacts",
                                          "touch"))
    for df in (cu, pr, o, e, c, tp):
        assert df.null_count().sum_horizontal().item() == 0
    assert set(cu["gender"]) == {"f", "m", "d"}
    assert cu["region"].n_unique() == 8
    assert cu["postal_code"].str.contains(r"^\d{5}$").all()
    assert cu["postal_code"].str.starts_with("0").any()  # zero padding is kept
    assert cu["birth_year"].is_between(END.year - 90, END.year - 18).all()
    assert cu["customer_id"].is_unique().all() and pr["product_id"].is_unique().all()
    assert pr["category"].n_unique() == 12
    assert (pr["list_price"] > 0).all() and (pr["unit_cost"] < pr["list_price"]).all()
    above = (pr["market_price"] < pr["list_price"]).mean()
    assert 0.15 < above < 0.35
    assert set(o["channel"]) == {"web", "app", "phone", "store"}
    assert set(e["event"]) == {"sent", "open", "click"}
    assert set(c["medium"]) == {"catalogue", "voucher", "sale", "free_shipping", "email"}
    assert set(c["group"]) == {"treatment", "control"}
    assert set(tp["channel"]) == {"search", "social", "display", "email", "affiliate", "direct"}
    assert (o["quantity"] != 0).all() and (o["unit_price"] >= 0).all()
    assert (o["unit_price"] == 0).sum() > 0  # a few free items
    assert o["returned_quantity"].is_between(0, o["quantity"].clip(lower_bound=0)).all()
    neg = o.filter(pl.col("quantity") < 0)
    assert neg.height > 0 and (neg["returned_quantity"] == 0).all()
    for df, col in ((o, "order_ts"), (e, "ts"), (c, "sent_ts"), (tp, "ts")):
        assert df[col].min() >= WINDOW_START and df[col].max() < WINDOW_STOP, col
    assert params["start"] == "2023-01-01" and params["end"] == "2025-12-31"


# --------------------------------------------------------------------------- determinism


def test_deterministic_for_a_seed(tmp_path):
    prm = SynthParams(chunk_size=1_000)
    a = generate(tmp_path / "a", 2_500, seed=3, params=prm, workers=2)
    b = generate(tmp_path / "b", 2_500, seed=3, params=prm, workers=1)
    c = generate(tmp_path / "c", 2_500, seed=4, params=prm)
    da, db, dc = _read_all(a.out), _read_all(b.out), _read_all(c.out)
    assert da.keys() == db.keys() == dc.keys()
    assert len(da) == 3 + 5 + 2  # orders parts, single tables, truth tables
    for name in da:
        assert da[name].equals(db[name]), name
    assert a.rows == b.rows
    assert (a.out / "truth/params.json").read_text() == (b.out / "truth/params.json").read_text()
    for name in ("orders/part-00000.parquet", "customers.parquet", "email_events.parquet",
                 "truth/customers.parquet"):
        assert not da[name].equals(dc[name]), name


def test_chunks_do_not_depend_on_total_size(tmp_path):
    prm = SynthParams(chunk_size=1_000)
    small = generate(tmp_path / "s", 2_000, seed=5, params=prm)
    large = generate(tmp_path / "l", 2_600, seed=5, params=prm)
    for name in ("orders/part-00000.parquet", "orders/part-00001.parquet", "products.parquet"):
        assert pl.read_parquet(small.out / name).equals(pl.read_parquet(large.out / name))
    cs = pl.read_parquet(small.out / "customers.parquet")
    cl = pl.read_parquet(large.out / "customers.parquet")
    assert cs.equals(cl.head(2_000))


# --------------------------------------------------------------------------- integrity


def test_referential_integrity(t):
    cu, pr, o, e, c, tp, tr = (t[k] for k in ("customers", "products", "orders", "email",
                                              "contacts", "touch", "truth"))
    ids = set(cu["customer_id"])
    for df in (o, e, c, tp):
        assert set(df["customer_id"]) <= ids
    assert tr["customer_id"].sort().equals(cu["customer_id"].sort())
    lines = o.join(pr, on="product_id", how="left", suffix="_p")
    assert lines["list_price"].null_count() == 0
    assert (lines["category"] == lines["category_p"]).all()
    assert (lines["unit_cost"] == lines["unit_cost_p"]).all()
    # unit price is the list price, sometimes discounted (at most 50 %), or zero (free item)
    paid = lines.filter(pl.col("unit_price") > 0)
    ratio = paid["unit_price"] / paid["list_price"]
    assert (paid["unit_price"] <= paid["list_price"]).all()
    assert (paid["unit_price"] >= 0.5 * paid["list_price"] - 0.0051).all()  # cents rounding
    assert 0.75 < (ratio > 0.999).mean() < 0.95
    # an order id belongs to one customer and one timestamp, across all parts
    per_order = o.group_by("order_id").agg(pl.col("customer_id").n_unique(),
                                           pl.col("order_ts").n_unique())
    assert (per_order["customer_id"] == 1).all() and (per_order["order_ts"] == 1).all()
    # a negative (return) line refers back to a bought line of the same order and product
    neg = o.filter(pl.col("quantity") < 0).select("order_id", "product_id")
    bought = o.filter(pl.col("quantity") > 0).select("order_id", "product_id").unique()
    assert neg.join(bought, on=["order_id", "product_id"], how="anti").height == 0


def test_email_events_are_consistent(t):
    e, cu = t["email"], t["customers"]
    key = ["customer_id", "campaign_id"]
    wide = e.pivot(on="event", index=key, values="ts", aggregate_function="min")
    assert e.unique(key + ["event"]).height == e.height, "duplicate events"
    assert wide["sent"].null_count() == 0, "open or click without a sent e-mail"
    opened = wide.filter(pl.col("open").is_not_null())
    assert (opened["open"] >= opened["sent"]).all()
    clicked = wide.filter(pl.col("click").is_not_null())
    assert clicked["open"].null_count() == 0, "click without open"
    assert (clicked["click"] >= clicked["open"]).all()
    sent = e.filter(pl.col("event") == "sent").join(cu, on="customer_id")
    assert (sent["ts"] >= sent["signup_ts"]).all()


def test_touchpoints_precede_sampled_orders(t):
    tp, o = t["touch"], t["orders"]
    assert tp.height > 0.1 * o["order_id"].n_unique()
    assert tp.select(pl.col("ts").is_sorted().over("customer_id").all()).item()


# --------------------------------------------------------------------------- planted truth


def test_bgnbd_process_recovered(t, params):
    tr, ov = t["truth"], _order_values(t)
    prm = params["params"]
    buyers = tr.filter(~pl.col("engaged_nonbuyer"))
    bg = (ov.filter(~pl.col("induced")).group_by("customer_id")
          .agg(n=pl.len(), first=pl.col("order_ts").min(), last=pl.col("order_ts").max()))
    x = buyers.join(bg, on="customer_id", how="left")
    assert (x["n"] == x["n_purchases"]).all()
    assert (x["n_repeat"] == x["n_purchases"] - 1).all()
    assert (x["first"] == x["first_purchase_ts"]).all()
    dead = x.filter(~pl.col("alive_at_end"))
    assert 0.2 < dead.height / x.height < 0.8
    assert (dead["last"] == dead["death_ts"]).all(), "drop-out happens right after a purchase"
    # E[X(T) | lambda, p] = (1 - exp(-lambda p T)) / p, per customer
    expected = -np.expm1(-(x["bgnbd_lambda"] * x["bgnbd_p"] * x["T_weeks"]).to_numpy()) \
        / x["bgnbd_p"].to_numpy()
    assert np.allclose(expected, x["expected_repeat"].to_numpy())
    resid = x["n_repeat"].to_numpy() - expected
    z = resid.mean() / (resid.std(ddof=1) / math.sqrt(resid.size))
    assert abs(z) < 4, f"repeat purchases {x['n_repeat'].mean():.3f} vs {expected.mean():.3f}"
    # the latent draws have the planted means
    lam, p = x["bgnbd_lambda"].to_numpy(), x["bgnbd_p"].to_numpy()
    r, alpha, a, b = prm["r"], prm["alpha"], prm["a"], prm["b"]
    assert abs(lam.mean() - r / alpha) < 4 * math.sqrt(r) / alpha / math.sqrt(lam.size)
    sd_p = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    assert abs(p.mean() - a / (a + b)) < 4 * sd_p / math.sqrt(p.size)
    # first purchases spread over the whole window
    weeks = params["window_weeks"]
    assert abs(x["T_weeks"].mean() - weeks / 2) < 4 * weeks / math.sqrt(12 * x.height)


def test_gamma_gamma_spend_recovered(t, params):
    prm = params["params"]
    ov = _order_values(t).join(t["truth"].select("customer_id", "gg_mean_spend", "gg_nu"),
                               on="customer_id")
    # value / (p / nu) ~ Gamma(p, 1) / p: mean 1, sd 1 / sqrt(p)
    ratio = (ov["value"] / ov["gg_mean_spend"]).to_numpy()
    tol = 0.01 + 4 / math.sqrt(prm["gg_p"] * ratio.size)
    assert abs(ratio.mean() - 1) < tol
    assert abs(ratio.std() - 1 / math.sqrt(prm["gg_p"])) < 0.05
    # customers' mean spend p / nu has the population mean p gamma / (q - 1)
    spend = t["truth"]["gg_mean_spend"].to_numpy()
    q, g = prm["gg_q"], prm["gg_gamma"]
    mean = prm["gg_p"] * g / (q - 1)
    sd = prm["gg_p"] * g / ((q - 1) * math.sqrt(q - 2))
    assert abs(spend.mean() - mean) < 4 * sd / math.sqrt(spend.size)
    assert params["implied"]["mean_order_value"] == pytest.approx(mean)
    assert abs(ov["value"].mean() / mean - 1) < 0.1


def test_price_insensitive_buy_above_market(t):
    above = t["products"].select("product_id", above=pl.col("market_price") < pl.col("list_price"))
    shares = (t["orders"].filter(pl.col("quantity") > 0).join(above, on="product_id")
              .join(t["truth"].select("customer_id", "price_insensitive"), on="customer_id")
              .group_by("price_insensitive").agg(pl.col("above").mean()))
    s = dict(zip(shares["price_insensitive"], shares["above"], strict=True))
    assert s[True] > 0.7 and s[False] < 0.25 and s[True] > 3 * s[False]
    share = t["truth"]["price_insensitive"].mean()
    assert 0.03 < share < 0.07


def test_campaign_effects_only_in_treatment(t, params):
    c, ind, tr = t["contacts"], t["induced"], t["truth"]
    prm = params["params"]
    control = (c["group"] == "control").mean()
    assert abs(control - prm["control_share"]) < 4 * math.sqrt(0.15 * 0.85 / c.height)
    assert (c.filter(pl.col("group") == "control")["cost"] == 0).all()
    assert (c.filter(pl.col("group") == "treatment")["cost"] > 0).all()
    hit = ind.join(c, on=["customer_id", "campaign_id"], how="left")
    assert hit["group"].null_count() == 0, "induced order without a contact"
    assert (hit["group"] == "treatment").all(), "control group got campaign-induced orders"
    window = pl.duration(days=prm["effect_window_days"])
    assert hit.select((pl.col("order_ts") >= pl.col("sent_ts"))
                      & (pl.col("order_ts") <= pl.col("sent_ts") + window)).to_series().all()
    # induced orders are real orders of that customer at that time
    assert ind.join(t["orders"], on=["order_id", "customer_id", "order_ts"], how="anti").height == 0
    counts = ind.group_by("customer_id").len()
    x = tr.join(counts, on="customer_id", how="left").with_columns(pl.col("len").fill_null(0))
    assert (x["len"] == x["n_induced"]).all()
    # the induced rate per treated contact matches the planted effect of each segment
    treated = (c.filter(pl.col("group") == "treatment")
               .join(tr.select("customer_id", "segment", "campaign_effect"), on="customer_id")
               .join(ind.select("customer_id", "campaign_id", hit=pl.lit(1)),
                     on=["customer_id", "campaign_id"], how="left")
               .group_by("segment").agg(pl.len(), pl.col("hit").sum(),
                                        pl.col("campaign_effect").first()))
    effects = prm["segment_effects"]
    assert set(treated["segment"]) == set(effects)
    for seg, n, hits, eff in treated.iter_rows():
        assert eff == effects[seg]
        assert abs(hits / n - eff) < 4 * math.sqrt(eff * (1 - eff) / n) + 1e-9, seg
    assert len(set(effects.values())) > 1


def test_engaged_nonbuyers(t):
    tr, o, e, c = t["truth"], t["orders"], t["email"], t["contacts"]
    nb = tr.filter(pl.col("engaged_nonbuyer"))["customer_id"]
    assert abs(nb.len() / N - 0.03) < 4 * math.sqrt(0.03 * 0.97 / N)
    assert not o["customer_id"].is_in(nb.implode()).any()
    assert not c["customer_id"].is_in(nb.implode()).any()
    rates = (e.with_columns(nb=pl.col("customer_id").is_in(nb.implode()))
             .group_by("nb").agg(opens=(pl.col("event") == "open").sum(),
                                 sent=(pl.col("event") == "sent").sum()))
    r = {row[0]: row[1] / row[2] for row in rates.iter_rows()}
    assert r[True] > 0.5 and r[False] < 0.3
    assert tr.filter(pl.col("engaged_nonbuyer"))["n_purchases"].sum() == 0
    # every other customer has at least one order
    buyers = tr.filter(~pl.col("engaged_nonbuyer"))["customer_id"]
    assert buyers.is_in(o["customer_id"].unique().implode()).all()


def test_email_propensities_recovered(t):
    e, tr = t["email"], t["truth"]
    per = (e.group_by("customer_id")
           .agg(sent=(pl.col("event") == "sent").sum(), opens=(pl.col("event") == "open").sum(),
                clicks=(pl.col("event") == "click").sum())
           .join(tr.select("customer_id", "open_propensity", "click_propensity"),
                 on="customer_id"))
    expected_opens = (per["sent"] * per["open_propensity"]).sum()
    # a few opens fall after the end of the window and are not observed
    assert 0.97 < per["opens"].sum() / expected_opens < 1.01
    expected_clicks = (per["opens"] * per["click_propensity"]).sum()
    assert abs(per["clicks"].sum() / expected_clicks - 1) < 0.05
    assert np.corrcoef(per["opens"] / per["sent"], per["open_propensity"])[0, 1] > 0.5


def test_returns_follow_propensity(t, params):
    o, tr = t["orders"], t["truth"]
    bought = o.filter(pl.col("quantity") > 0)
    neg_units = -o.filter(pl.col("quantity") < 0)["quantity"].sum()
    flagged_units = bought["returned_quantity"].sum()
    share_separate = neg_units / (neg_units + flagged_units)
    assert abs(share_separate - params["params"]["negative_return_share"]) < 0.03
    per = (bought.group_by("customer_id").agg(units=pl.col("quantity").sum(),
                                              ret=pl.col("returned_quantity").sum())
           .join(o.filter(pl.col("quantity") < 0).group_by("customer_id")
                 .agg(neg=-pl.col("quantity").sum()), on="customer_id", how="left")
           .join(tr.select("customer_id", "return_propensity"), on="customer_id")
           .with_columns(pl.col("neg").fill_null(0)))
    returned = per["ret"] + per["neg"]
    expected = (per["units"] * per["return_propensity"]).sum()
    assert abs(returned.sum() / expected - 1) < 0.05
    heavy = per.filter(pl.col("units") >= 20)
    rate = (heavy["ret"] + heavy["neg"]) / heavy["units"]
    assert np.corrcoef(rate, heavy["return_propensity"])[0, 1] > 0.7


def test_category_affinity_drives_purchases(t):
    top = (t["orders"].filter(pl.col("quantity") > 0)
           .group_by("customer_id", "category").agg(pl.col("quantity").count().alias("n"))
           .sort(["customer_id", "n", "category"], descending=[False, True, False])
           .group_by("customer_id", maintain_order=True).first()
           .join(t["truth"].select("customer_id", "top_category"), on="customer_id"))
    assert (top["category"] == top["top_category"]).mean() > 0.5


# --------------------------------------------------------------------------- atomicity, errors


def test_failed_run_keeps_earlier_output(tmp_path):
    out = tmp_path / "d"
    prm = SynthParams(chunk_size=500)
    generate(out, 600, seed=1, params=prm)
    before = _read_all(out)

    def boom(done: int, total: int) -> None:
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        generate(out, 900, seed=2, params=prm, progress=boom)
    after = _read_all(out)
    assert after.keys() == before.keys()
    assert all(after[k].equals(before[k]) for k in before)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kwargs", [dict(customers=0), dict(customers=1.5), dict(years=0),
                                    dict(seed=-1), dict(end="2025-12-31"),
                                    dict(params=SynthParams(segment_effects=(0.1,)))])
def test_bad_arguments(tmp_path, kwargs):
    args = dict(out=tmp_path / "x", customers=10) | kwargs
    with pytest.raises(ConfigError):
        generate(**args)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_leap_day_end_and_short_window(tmp_path):
    res = generate(tmp_path / "leap", 300, seed=2, end=date(2024, 2, 29), years=1)
    o = pl.read_parquet(tmp_path / "leap" / "orders" / "*.parquet")
    assert o["order_ts"].min() >= datetime(2023, 3, 1) and o["order_ts"].max() < datetime(2024, 3, 1)
    doc = json.loads((tmp_path / "leap" / "truth" / "params.json").read_text())
    assert doc["start"] == "2023-03-01" and doc["rows"]["orders"] == res.rows["orders"]
    assert pq.read_metadata(tmp_path / "leap" / "customers.parquet").num_rows == 300


# --------------------------------------------------------------------------- kernels


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), max_size=8), st.integers(0, 2**32 - 1))
def test_segmented_cumsum_matches_reference(counts, seed):
    counts = np.array(counts, dtype=np.int64)
    values = np.random.default_rng(seed).normal(size=int(counts.sum()))
    got = synth.segmented_cumsum(values, counts)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    want = np.concatenate([np.cumsum(values[s:e]) for s, e in zip(bounds[:-1], bounds[1:],
                                                                    strict=True)] or [[]])
    np.testing.assert_allclose(got, want)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 6)), max_size=8),
       st.integers(0, 2**32 - 1))
def test_repeat_purchase_times_properties(mn, seed):
    rng = np.random.default_rng(seed)
    n = np.array([a + b for a, b in mn], dtype=np.int64)
    m = np.array([a for a, _ in mn], dtype=np.int64)
    start = rng.uniform(0, 10, m.size)
    horizon = rng.uniform(0.1, 5, m.size)
    out = synth.repeat_purchase_times(start, horizon, m, rng.standard_exponential(m.sum()),
                                      rng.gamma(n - m + 1.0))
    owner = np.repeat(np.arange(m.size), m)
    assert out.size == m.sum()
    assert np.all(out > start[owner]) and np.all(out < start[owner] + horizon[owner])
    for i in range(m.size):
        assert np.all(np.diff(out[owner == i]) >= 0)


def test_repeat_purchase_times_are_uniform_order_statistics():
    # the first m of n sorted uniforms: E[U_(j)] = j / (n + 1)
    rng = np.random.default_rng(0)
    k, n, m = 20_000, 5, 3
    out = synth.repeat_purchase_times(np.zeros(k), np.ones(k), np.full(k, m),
                                      rng.standard_exponential(k * m),
                                      rng.gamma(np.full(k, n - m + 1.0))).reshape(k, m)
    np.testing.assert_allclose(out.mean(axis=0), np.arange(1, m + 1) / (n + 1), atol=0.01)


def test_choose_line_products_hits_order_values():
    rng = np.random.default_rng(1)
    prices = np.round(np.exp(rng.uniform(0, 6, 600)), 2)
    cat = np.repeat(np.arange(3), 200)
    pool_offsets = np.array([[0, 200, 400, 600]])
    order = np.lexsort((np.log(prices), cat))
    n_orders = 2_000
    lines = rng.integers(1, 5, n_orders)
    line_order = np.repeat(np.arange(n_orders), lines)
    k = line_order.size
    values = rng.uniform(20, 200, n_orders)
    share = rng.gamma(4.0, 1.0, k)
    share /= np.bincount(line_order, share)[line_order]
    cum = np.cumsum(rng.dirichlet(np.ones(3), 10), axis=1)
    cust = rng.integers(0, 10, k)
    discount = np.where(rng.random(k) < 0.2, 0.3, 0.0)
    product, qty = synth.choose_line_products(
        line_order, cust, values[line_order] * share, discount, np.ones(k, np.int64),
        rng.random(k), np.zeros(k, np.int64), cum, pool_offsets, np.log(prices[order]), order,
        prices)
    assert product.min() >= 0 and product.max() < prices.size and qty.min() >= 1
    got = np.bincount(line_order, qty * prices[product] * (1 - discount))
    # an order misses its value only by its last line's gap in the (random) price list
    rel = got / values - 1
    assert abs(rel.mean()) < 0.005 and np.quantile(abs(rel), 0.95) < 0.03
    assert abs(rel).max() < 0.15
    with pytest.raises(ValueError):
        synth.choose_line_products(line_order[:-1], cust, values[line_order] * share, discount,
                                   np.ones(k, np.int64), rng.random(k), np.zeros(k, np.int64),
                                   cum, pool_offsets, np.log(prices[order]), order, prices)
