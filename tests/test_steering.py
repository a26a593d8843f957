"""Steering: empirical Bayes affinity, budgets on hand-worked numbers, config errors,
``centile steer`` outputs and the ``centile run`` stage on small generated data."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from centile.config import load_config
from centile.errors import ConfigError
from centile.steering.affinity import affinity_table, fit_beta_binomial, posterior_mean
from centile.steering.compute import budget_table
from centile.steering.settings import SteeringSettings, parse_steering
from centile.synth.generate import generate

MEDIA = """
[steering.media.catalogue]
cost = 1.2
capacity = 60
categories = ["fashion", "home"]
[steering.media.email]
cost = 0.01
[steering.media.voucher]
cost = 0.8
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("steering") / "data"
    generate(out, 1500, seed=5)
    return out


def _toml(tmp_path, data, extra=""):
    p = tmp_path / "centile.toml"
    p.write_text(f'data = "{data}"\nseed = 3\n[steering]\nperiods = 13\ncap = 4\ngap = 1\n'
                 f'global_budget = 300.0\n{extra}{MEDIA}')
    return p


# ---------------------------------------------------------------- empirical Bayes

def test_no_history_gives_the_prior_mean_and_much_history_the_raw_rate():
    rng = np.random.default_rng(4)
    n = rng.integers(1, 10, 2000)
    prior = fit_beta_binomial(n, rng.binomial(n, rng.beta(1.0, 4.0, n.size)))
    assert prior.alpha + prior.beta < 100  # the customers differ: a prior of moderate strength
    assert posterior_mean(prior, np.array([0]), np.array([0]))[0] == pytest.approx(prior.mean)
    assert posterior_mean(prior, np.array([100_000]), np.array([31_000]))[0] == pytest.approx(0.31, abs=1e-3)


@pytest.mark.parametrize(("a", "b"), [(2.0, 8.0), (1.5, 1.5), (6.0, 30.0)])
def test_marginal_likelihood_recovers_a_planted_prior(a, b):
    rng = np.random.default_rng(7)
    p = rng.beta(a, b, 20_000)
    n = rng.integers(1, 15, p.size)
    pr = fit_beta_binomial(n, rng.binomial(n, p))
    assert pr.converged
    # the mean is pinned down tightly; the strength a + b (a variance) less so when it is large
    assert pr.mean == pytest.approx(a / (a + b), rel=0.03)
    assert pr.alpha + pr.beta == pytest.approx(a + b, rel=0.2)


def test_fit_is_a_function_of_the_histogram_so_order_and_partition_do_not_matter():
    rng = np.random.default_rng(2)
    n = rng.integers(0, 6, 3000)
    r = rng.binomial(n, 0.2)
    perm = rng.permutation(n.size)
    assert fit_beta_binomial(n, r) == fit_beta_binomial(n[perm], r[perm])


def test_incremental_affinity_is_treated_minus_control_and_times_the_assortment_share():
    resp = pl.DataFrame({"customer_id": [1, 1, 2, 3, 3, 4], "medium": ["a"] * 6,
                         "control": [False, True, False, False, True, True],
                         "contacts": [4, 2, 3, 5, 1, 2], "responses": [2, 0, 1, 1, 1, 1]})
    ids = pl.Series("customer_id", [1, 2, 3, 4, 5])
    aff, priors = affinity_table(resp, ids, ["a"], {"a": np.array([1.0, 0.5, 0.2, 1.0, 1.0])})
    t = priors.filter(pl.col("arm") == "treatment").row(0, named=True)
    c = priors.filter(pl.col("arm") == "control").row(0, named=True)
    tr = (t["alpha"] + np.array([2, 1, 1, 0, 0])) / (t["alpha"] + t["beta"] + np.array([4, 3, 5, 0, 0]))
    cr = (c["alpha"] + np.array([0, 0, 1, 1, 0])) / (c["alpha"] + c["beta"] + np.array([2, 0, 1, 2, 0]))
    np.testing.assert_allclose(aff["affinity"].to_numpy(), (tr - cr) * [1.0, 0.5, 0.2, 1.0, 1.0])
    assert aff["contacts"].to_list() == [4, 3, 5, 0, 0]
    assert aff["control_contacts"].to_list() == [2, 0, 1, 2, 0]


# ---------------------------------------------------------------- budgets

def test_budgets_on_hand_worked_numbers():
    clv = pl.DataFrame({"customer_id": [1, 2, 3], "frequency": [3.0, 0.0, 1.0],
                        "expected_order_value": [50.0, 20.0, 10.0], "clv": [200.0, 10.0, 0.0]})
    spend = pl.DataFrame({"customer_id": [1, 2, 3], "revenue": [500.0, 40.0, 10.0],
                          "costed_revenue": [400.0, 0.0, 10.0], "cost": [240.0, 0.0, 9.0]})
    st = SteeringSettings(target_margin=0.1, cost_unit=0.05)
    df, _ = budget_table(clv, spend, st, clv_margin=1.0)
    rows = {r["customer_id"]: r for r in df.iter_rows(named=True)}
    # customer 1: ratio 240/400 = 0.6; 200 - 120 - 20 = 60 -> 1200 units of 0.05
    assert rows[1]["cost_ratio"] == pytest.approx(0.6)
    assert rows[1]["budget"] == pytest.approx(60.0) and rows[1]["budget_units"] == 1200
    assert rows[1]["expected_order_margin"] == pytest.approx(20.0)
    # customer 2: no costed lines -> the overall ratio 249/410; 10 * (1 - 0.607.. - 0.1)
    r2 = 249 / 410
    assert rows[2]["budget"] == pytest.approx(10 * (1 - r2 - 0.1))
    # customer 3: ratio 0.9 + target 0.1 leaves nothing; a zero forecast is a zero budget
    assert rows[3]["budget"] == 0.0 and rows[3]["budget_units"] == 0
    # a clv margin of 0.5 means clv is half the discounted revenue
    df2, _ = budget_table(clv, spend, st, clv_margin=0.5)
    assert df2["forecast_revenue"][0] == pytest.approx(400.0)


def test_budgets_do_not_depend_on_the_order_of_the_spend_rows():
    """Issue 12 (found by comparing two 1M runs byte for byte): the fallback cost ratio was a float
    sum in the order DuckDB's parallel GROUP BY returned the rows, so its last bits changed between
    runs; it is an exactly rounded sum now."""
    rng = np.random.default_rng(5)
    n = 5000
    clv = pl.DataFrame({"customer_id": np.arange(n), "frequency": rng.integers(0, 5, n).astype(float),
                        "expected_order_value": rng.random(n) * 80, "clv": rng.random(n) * 300})
    costed = np.where(rng.random(n) < 0.2, 0.0, rng.random(n) * 1000 / 3)
    spend = pl.DataFrame({"customer_id": np.arange(n), "revenue": costed, "costed_revenue": costed,
                          "cost": costed * rng.random(n) / 7})
    st = SteeringSettings(target_margin=0.1, cost_unit=0.05)
    want, _ = budget_table(clv, spend, st)
    for seed in range(5):
        shuffled = spend.sample(fraction=1.0, shuffle=True, seed=seed)
        got, _ = budget_table(clv, shuffled, st)
        assert got.equals(want)
    fallback = want.filter(pl.Series(costed == 0.0))["cost_ratio"].unique()
    assert fallback.to_list() == [math.fsum(spend["cost"]) / math.fsum(costed)]


def test_budgets_without_unit_cost_use_the_configured_ratio_and_new_customers_the_one_time_median():
    clv = pl.DataFrame({"customer_id": [1, 2, 3], "frequency": [0.0, 0.0, 2.0],
                        "expected_order_value": [10.0, 30.0, 50.0], "clv": [100.0, 300.0, 900.0]})
    df, notes = budget_table(clv, None, SteeringSettings(cost_ratio=0.5, target_margin=0.0),
                             new_customers=pl.Series([1, 2, 3, 9]))
    assert any("cost_ratio" in n for n in notes)
    new = df.filter(pl.col("customer_id") == 9).row(0, named=True)
    assert new["budget"] == pytest.approx(100.0)  # median of 50 and 150 (the two one-time buyers)
    assert new["model"].startswith("new")


# ---------------------------------------------------------------- config

@pytest.mark.parametrize(("raw", "match"), [
    ({"cpa": 3}, "did you mean 'cap'"),
    ({"cap": -1}, r"\[steering\] cap"),
    ({"target_margin": 2}, "target_margin"),
    ({"periods": 3, "seasonality": [1, 1]}, "3 factors"),
    ({"media": {"mail": {"capacity": 3}}}, "needs cost"),
    ({"media": {"mail": {"cost": 1, "categoriez": []}}}, "did you mean 'categories'"),
    ({"media": {"mail": {"cost": 1, "cap": -2}}}, r"\[steering.media.mail\] cap"),
    ({"media": {"mail": {"cost": 1, "capacity_per_period": 1.5}}}, "capacity_per_period"),
    ({"prior_by": 3}, "prior_by"),
    ({"prior_min_customers": 1}, "prior_min_customers"),
])
def test_bad_config_names_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_steering(raw)


# ---------------------------------------------------------------- the job and the stage

def _check_plan(out, cfg_budget=300.0, capacity=60, cap=4, gap=1):
    plan = pl.read_parquet(out / "plan.parquet")
    budgets = pl.read_parquet(out / "budgets.parquet")
    doc = json.loads((out / "steering.json").read_text())
    assert plan["cost"].sum() <= cfg_budget + 1e-9
    assert plan.filter(pl.col("medium") == "catalogue").height <= capacity
    per = plan.group_by("customer_id").agg(n=pl.len(), cost=pl.col("cost").sum(),
                                           p=pl.col("period").sort()).join(budgets, on="customer_id")
    assert per["n"].max() <= cap
    assert (per["cost"] <= per["budget"] + 1e-9).all()
    for p in per["p"].to_list():
        assert all(b - a >= gap + 1 for a, b in zip(p, p[1:], strict=False))
    assert (plan["value"] > 0).all()
    assert 0 <= doc["gap"] <= 0.01 and doc["bound"] >= doc["value"]
    return plan, doc


def test_run_steering_writes_a_feasible_certified_plan(data, tmp_path):
    from centile.steering.job import run_steering

    res = run_steering(load_config(_toml(tmp_path, data)), tmp_path / "out")
    plan, doc = _check_plan(tmp_path / "out")
    assert plan.height > 0 and doc["customers"] == 1500
    for f in ("affinity", "affinity_priors", "budgets", "plan_summary"):
        assert (tmp_path / "out" / f"{f}.parquet").exists()
    assert res.summary_table.filter(pl.col("level") == "total")["contacts"][0] == plan.height
    # the closed loop: the plan as a contacts table with control groups (default 10 %)
    con = pl.read_parquet(tmp_path / "out" / "plan_contacts.parquet")
    assert con.columns == ["customer_id", "campaign_id", "sent_ts", "medium", "cost", "group"]
    assert con.height == plan.height and set(con["group"].unique()) == {"treatment", "control"}
    assert 0.05 < (con["group"] == "control").mean() < 0.15
    assert (con.filter(pl.col("group") == "control")["cost"] == 0).all()
    assert con["sent_ts"].min().date() == res.summary["horizon_start"]


def test_global_holdout_members_are_never_contacted_and_threads_do_not_matter(data, tmp_path):
    from centile.steering.job import run_steering
    from centile.uplift.holdout import uniforms

    extra = "[holdout]\nglobal_share = 0.2\n"
    p = _toml(tmp_path, data)
    p.write_text(p.read_text() + extra)
    a = run_steering(load_config(p, threads=1), tmp_path / "a")
    b = run_steering(load_config(p), tmp_path / "b")
    assert a.plan.equals(b.plan)
    assert (tmp_path / "a" / "plan.parquet").read_bytes() == (tmp_path / "b" / "plan.parquet").read_bytes()
    ids = a.budgets["customer_id"]
    members = ids.filter(pl.Series(uniforms(ids, "global-holdout", 3) < 0.2))
    assert members.len() > 100
    assert not a.plan["customer_id"].is_in(members.implode()).any()


def test_centile_run_has_a_steering_stage_only_with_the_section(data, tmp_path):
    from centile.run import run_pipeline

    res = run_pipeline(load_config(_toml(tmp_path, data)), tmp_path / "out")
    assert res.stages["steering"]["status"] == "ran"
    _check_plan(tmp_path / "out")
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<section id="steering">' in html and 'id="steering-gap"' in html and 'id="steering-media"' in html
    plain = run_pipeline(load_config(data=data), tmp_path / "plain")
    assert plain.stages["steering"]["status"] == "skipped"
    assert not (tmp_path / "plain" / "plan.parquet").exists()


def test_cli_steer_writes_the_plan_and_maps_bad_config_to_exit_1(data, tmp_path):
    from typer.testing import CliRunner

    from centile.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["steer", "-c", str(_toml(tmp_path, data)), "--out", str(tmp_path / "o"),
                            "--global-budget", "150", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["global_budget"] == 150.0 and doc["spend"] <= 150.0 + 1e-9
    _check_plan(tmp_path / "o", cfg_budget=150.0)
    bad = tmp_path / "bad.toml"
    bad.write_text(f'data = "{data}"\n[steering]\ncpa = 3\n')
    r = runner.invoke(app, ["steer", "-c", str(bad), "--out", str(tmp_path / "o2")])
    assert r.exit_code == 1 and "did you mean 'cap'" in r.output
    r = runner.invoke(app, ["steer", "--help"])
    assert r.exit_code == 0 and "certified" in r.output


# ---------------------------------------------------------------- proposals and budgets tables

def _proposals(tmp_path, n=40, seed=1):
    rng = np.random.default_rng(seed)
    rows = [(i, m, t, float(np.round(rng.normal(0.8, 1.0), 3)), c)
            for i in range(1, n + 1) for m, c in (("mail", 1.0), ("call", 2.5)) for t in range(1, 7)
            if rng.random() < 0.8]
    prop = pl.DataFrame(rows, schema=["customer_id", "medium", "period", "value", "cost"], orient="row")
    prop.write_parquet(tmp_path / "proposals.parquet")
    pl.DataFrame({"customer_id": list(range(1, n + 1)), "budget": rng.integers(0, 8, n).astype(float)}).write_csv(
        tmp_path / "budgets.csv")
    return prop


def test_plan_from_proposals_and_budgets_alone_matches_the_solver(tmp_path):
    # no data folder and no orders: the plan reads only the two tables
    from centile.steering.job import run_steering
    from centile.steering.solve import solve_plan

    prop = _proposals(tmp_path)
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'[steering]\nperiods = 6\ncap = 3\ngap = 0\ncost_unit = 0.5\n'
                        f'global_budget = 40.0\nproposals = "{tmp_path / "proposals.parquet"}"\n'
                        f'budgets = "{tmp_path / "budgets.csv"}"\n')
    res = run_steering(load_config(cfg_file), tmp_path / "out")
    v = np.full((40, 2, 6), np.nan)
    mi = {"call": 0, "mail": 1}
    for r in prop.iter_rows(named=True):
        v[r["customer_id"] - 1, mi[r["medium"]], r["period"] - 1] = r["value"]
    budgets = pl.read_csv(tmp_path / "budgets.csv")["budget"].to_numpy()
    sol = solve_plan(v, np.array([5, 2]), (budgets / 0.5).astype(np.int64), np.full(40, 10**6), cap=3, gap=0,
                     global_budget=80)
    assert res.summary["value"] == pytest.approx(sol.value) and res.summary["gap"] == pytest.approx(sol.gap)
    plan = pl.read_parquet(tmp_path / "out" / "plan.parquet")
    assert plan["cost"].sum() <= 40.0
    per = plan.group_by("customer_id").agg(c=pl.col("cost").sum()).join(
        pl.read_csv(tmp_path / "budgets.csv"), on="customer_id")
    assert (per["c"] <= per["budget"]).all()


def test_the_plan_does_not_depend_on_the_order_of_the_input_rows(data, tmp_path):
    from centile.steering.job import run_steering

    prop = _proposals(tmp_path, n=60, seed=4)
    prop.sample(fraction=1.0, shuffle=True, seed=9).write_parquet(tmp_path / "shuffled.parquet")
    outs = []
    for name in ("proposals.parquet", "shuffled.parquet"):
        f = tmp_path / f"{name}.toml"
        f.write_text(f'data = "{data}"\n[steering]\nperiods = 6\ncap = 2\ngap = 1\nglobal_budget = 30.0\n'
                     f'proposals = "{tmp_path / name}"\n')
        outs.append(run_steering(load_config(f), tmp_path / f"out-{name}"))
    assert outs[0].plan.equals(outs[1].plan) and outs[0].summary["gap"] == outs[1].summary["gap"]


def test_proposals_with_two_costs_for_a_medium_or_budgets_alone_are_refused(data, tmp_path):
    from centile.errors import InputError
    from centile.steering.job import run_steering

    prop = _proposals(tmp_path)
    prop.with_columns(cost=pl.when(pl.col("customer_id") == 3).then(9.0).otherwise(pl.col("cost"))).write_parquet(
        tmp_path / "p2.parquet")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'data = "{data}"\n[steering]\nperiods = 6\nproposals = "{tmp_path / "p2.parquet"}"\n')
    with pytest.raises(InputError, match="one cost per medium"):
        run_steering(load_config(cfg_file), tmp_path / "out")
    with pytest.raises(ConfigError, match="budgets needs"):
        parse_steering({"budgets": "b.csv"})


def test_centile_steer_plans_from_proposals_without_any_order_data(tmp_path):
    from typer.testing import CliRunner

    from centile.cli.app import app

    _proposals(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'data = "{empty}"\n[steering]\nperiods = 6\ncap = 2\ngap = 1\nglobal_budget = 30.0\n'
                        f'proposals = "{tmp_path / "proposals.parquet"}"\nbudgets = "{tmp_path / "budgets.csv"}"\n')
    runner = CliRunner()
    r = runner.invoke(app, ["steer", "-c", str(cfg_file), "--out", str(tmp_path / "out"), "--json"])
    assert r.exit_code == 0, r.output
    plan = pl.read_parquet(tmp_path / "out" / "plan.parquet")
    assert plan.height > 0 and plan["cost"].sum() <= 30.0
    assert json.loads((tmp_path / "out" / "steering.json").read_text())["notes"][0].startswith("plan from the proposals")
    # a config without orders still cannot run the stages that read orders
    r = runner.invoke(app, ["run", "-c", str(cfg_file), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1 and "no orders table" in r.output and "centile steer" in r.output


def test_neither_orders_nor_proposals_is_a_clear_error(tmp_path):
    from typer.testing import CliRunner

    from centile.cli.app import app

    empty = tmp_path / "empty"
    empty.mkdir()
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(f'data = "{empty}"\n[steering]\nperiods = 6\n')
    r = CliRunner().invoke(app, ["steer", "-c", str(cfg_file), "--out", str(tmp_path / "out")])
    assert r.exit_code == 1
    assert "no orders table found" in r.output and "[steering] proposals" in r.output
    with pytest.raises(ConfigError, match="set \\[steering\\] proposals"):
        load_config(data=empty)
