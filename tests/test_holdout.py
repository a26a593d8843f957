"""Control groups: deterministic hash assignment, shares, strata, global holdout, CLI."""

import datetime as dt
import json
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

from centile.errors import ConfigError, InputError
from centile.uplift.holdout import GLOBAL_ARM, assign, parse_holdout_spec, uniforms

ARMS = {"A": 0.45, "B": 0.35, "control": 0.2}


def _customers(n=40_000, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"customer_id": np.arange(1, n + 1) if ids is None else ids,
                         "club": rng.choice(["gold", "silver", "bronze", "none"], n, p=[0.05, 0.15, 0.3, 0.5])})


def _spec(**kw):
    return parse_holdout_spec({"campaigns": ["spring", "summer"], "arms": ARMS, **kw})


def test_stable_across_runs_and_input_order():
    c = _customers()
    spec = _spec(stratify_by="club")
    a = assign(c, spec, seed=7).assignments
    assert a.equals(assign(c, spec, seed=7).assignments)
    shuffled = assign(c.sample(fraction=1.0, shuffle=True, seed=3), spec, seed=7).assignments
    j = a.join(shuffled, on=["customer_id", "campaign"])
    assert j.height == a.height and (j["arm"] == j["arm_right"]).all()
    # another seed or salt gives another assignment
    other = assign(c, spec, seed=8).assignments
    assert (other["arm"] != a["arm"]).mean() > 0.3
    salted = assign(c, _spec(salts={"spring": "spring-2026"}), seed=7).assignments
    sp = pl.col("campaign") == "spring"
    assert (salted.filter(sp)["arm"] != a.filter(sp)["arm"]).mean() > 0.3
    assert (salted.filter(~sp)["arm"] == a.filter(~sp)["arm"]).all()


def test_new_customers_do_not_move_old_ones():
    c = _customers(20_000)
    more = pl.concat([c, _customers(5_000, seed=1, ids=np.arange(100_001, 105_001))])
    a = assign(c, _spec(), seed=1).assignments
    b = assign(more, _spec(), seed=1).assignments
    j = a.join(b, on=["customer_id", "campaign"])
    assert j.height == a.height and (j["arm"] == j["arm_right"]).all()


def test_shares_within_sampling_error_per_stratum():
    c = _customers()
    res = assign(c, _spec(stratify_by="club"), seed=3)
    for r in res.shares.iter_rows(named=True):
        n = c.filter(pl.col("club") == r["stratum"]).height
        p = ARMS[r["arm"]]
        assert abs(r["share"] - p) < 4.5 * math.sqrt(p * (1 - p) / n), r


def test_stratified_method_gives_exact_shares():
    c = _customers(10_007)
    res = assign(c, _spec(stratify_by="club", method="stratified"), seed=3)
    counts = res.assignments.group_by("campaign", "stratum", "arm").agg(n=pl.len())
    sizes = c.group_by("club").agg(n=pl.len())
    size = dict(zip(sizes["club"], sizes["n"], strict=True))
    for r in counts.iter_rows(named=True):
        assert abs(r["n"] - ARMS[r["arm"]] * size[r["stratum"]]) < 1.0, r
    # still a hash order: stable under input order
    again = assign(c.reverse(), _spec(stratify_by="club", method="stratified"), seed=3).assignments
    j = res.assignments.join(again, on=["customer_id", "campaign"])
    assert (j["arm"] == j["arm_right"]).all()


def test_campaigns_are_independent():
    a = assign(_customers(), _spec(), seed=5).assignments
    wide = a.pivot(on="campaign", index="customer_id", values="arm")
    table = wide.group_by("spring", "summer").agg(n=pl.len()).pivot(on="summer", index="spring", values="n")
    obs = table.drop("spring").to_numpy()
    assert stats.chi2_contingency(obs).pvalue > 1e-4


def test_global_holdout_excluded_from_every_campaign():
    c = _customers()
    res = assign(c, _spec(global_share=0.05), seed=2)
    a = res.assignments
    g = a.filter(pl.col("arm") == GLOBAL_ARM)
    per = g.group_by("campaign").agg(pl.col("customer_id").sort())
    assert per.height == 2 and per["customer_id"][0].to_list() == per["customer_id"][1].to_list()
    share = g.filter(pl.col("campaign") == "spring").height / c.height
    assert abs(share - 0.05) < 4.5 * math.sqrt(0.05 * 0.95 / c.height)
    # the campaign arms keep their planned shares among the others
    rest = a.filter(pl.col("arm") != GLOBAL_ARM, pl.col("campaign") == "spring")
    ctrl = (rest["arm"] == "control").mean()
    assert abs(ctrl - 0.2) < 4.5 * math.sqrt(0.16 / rest.height)
    # the global draw does not depend on the campaign salts
    other = assign(c, _spec(global_share=0.05, salts={"spring": "x", "summer": "y"}), seed=2).assignments
    assert set(other.filter(pl.col("arm") == GLOBAL_ARM)["customer_id"]) == set(g["customer_id"])
    # after global_until it is not applied
    ended = assign(c, _spec(global_share=0.05, global_until="2025-01-31"), seed=2, as_of=dt.date(2025, 6, 1))
    assert GLOBAL_ARM not in set(ended.assignments["arm"]) and ended.notes


def test_string_ids_and_uniforms():
    ids = pl.Series([f"c{i:06d}" for i in range(20_000)])
    u = uniforms(ids, "spring", 0)
    assert u.min() >= 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > 1e-4
    assert np.array_equal(u, uniforms(ids, "spring", 0))
    res = assign(pl.DataFrame({"customer_id": ids}), _spec(), seed=0)
    assert res.assignments.height == 40_000 and "stratum" not in res.assignments.columns


def test_config_and_input_errors():
    with pytest.raises(ConfigError, match="sum to 1"):
        parse_holdout_spec({"arms": {"A": 0.5, "control": 0.4}})
    with pytest.raises(ConfigError, match="unknown"):
        parse_holdout_spec({"arm": {"A": 1.0}})
    with pytest.raises(ConfigError, match="stratify_by"):
        parse_holdout_spec({"method": "stratified"})
    with pytest.raises(ConfigError, match="reserved"):
        parse_holdout_spec({"arms": {GLOBAL_ARM: 0.5, "control": 0.5}})
    assert parse_holdout_spec({"control_share": 0.1}).arms == {"treatment": 0.9, "control": 0.1}
    with pytest.raises(InputError, match="duplicate"):
        assign(pl.DataFrame({"customer_id": [1, 1]}), _spec())
    with pytest.raises(InputError, match="stratify_by"):
        assign(pl.DataFrame({"customer_id": [1, 2]}), _spec(stratify_by="club"))


def test_cli_holdout(tmp_path):
    from typer.testing import CliRunner

    from centile.cli import app
    from centile.synth import generate

    data = tmp_path / "data"
    generate(data, 3_000, seed=4, years=1)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'data = "{data}"\n[holdout]\ncampaigns = ["spring"]\ncontrol_share = 0.1\n'
                   'stratify_by = "region"\nglobal_share = 0.02\n')
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["holdout", "-c", str(cfg), "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["customers"] == 3_000
    a = pl.read_parquet(out / "assignments.parquet")
    assert a.columns[:3] == ["customer_id", "campaign", "arm"] and a.height == 3_000
    assert set(a["arm"]) == {"treatment", "control", GLOBAL_ARM}
    assert (out / "assignment_shares.parquet").exists() and (out / "manifest.json").exists()
