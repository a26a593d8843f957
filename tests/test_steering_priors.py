"""Empirical-Bayes priors per segment (``[steering] prior_by``): one beta-binomial prior per
(medium, arm, segment), the medium's prior for small segments."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from centile.config import load_config
from centile.errors import InputError
from centile.steering.affinity import affinity_table, fit_beta_binomial
from centile.synth.generate import generate

PLANTED = {"loyal": (6.0, 14.0), "lapsing": (1.0, 19.0), "new": (2.0, 4.0)}


def _responses(rng, sizes):
    rows, seg = [], []
    cid = 0
    for name, size in sizes.items():
        a, b = PLANTED[name]
        p = rng.beta(a, b, size)
        n = rng.integers(1, 12, size)
        r = rng.binomial(n, p)
        for k in range(size):
            cid += 1
            rows.append((cid, "mail", False, int(n[k]), int(r[k])))
            seg.append(name)
    resp = pl.DataFrame(rows, schema=["customer_id", "medium", "control", "contacts", "responses"], orient="row")
    return resp, pl.Series("customer_id", np.arange(1, cid + 1)), pl.Series("segment", seg)


def test_priors_per_segment_recover_the_planted_ones():
    resp, ids, seg = _responses(np.random.default_rng(3), {"loyal": 6000, "lapsing": 6000, "new": 6000})
    aff, priors = affinity_table(resp, ids, ["mail"], segments=seg, min_customers=100)
    t = priors.filter(pl.col("arm") == "treatment")
    for name, (a, b) in PLANTED.items():
        row = t.filter(pl.col("segment") == name).row(0, named=True)
        assert not row["fallback"] and row["converged"]
        assert row["prior_mean"] == pytest.approx(a / (a + b), rel=0.04)
        assert row["alpha"] + row["beta"] == pytest.approx(a + b, rel=0.25)
    # each customer is shrunk towards their own segment's prior
    lapsing = t.filter(pl.col("segment") == "lapsing").row(0, named=True)
    row = aff.filter(pl.col("customer_id") == int(ids[6000])).row(0, named=True)  # the first lapsing customer
    want = (lapsing["alpha"] + row["responses"]) / (lapsing["alpha"] + lapsing["beta"] + row["contacts"])
    assert row["response_rate"] == pytest.approx(want)
    # the medium's prior (segment null) is the pooled fit
    pooled = t.filter(pl.col("segment").is_null()).row(0, named=True)
    assert pooled["alpha"] == fit_beta_binomial(resp["contacts"].to_numpy(), resp["responses"].to_numpy()).alpha


def test_a_small_segment_falls_back_to_the_medium_prior():
    resp, ids, seg = _responses(np.random.default_rng(4), {"loyal": 3000, "lapsing": 3000, "new": 40})
    aff, priors = affinity_table(resp, ids, ["mail"], segments=seg, min_customers=100)
    t = priors.filter(pl.col("arm") == "treatment")
    small = t.filter(pl.col("segment") == "new").row(0, named=True)
    medium = t.filter(pl.col("segment").is_null()).row(0, named=True)
    assert small["fallback"] and small["customers"] == 40
    assert (small["alpha"], small["beta"]) == (medium["alpha"], medium["beta"])
    row = aff.filter(pl.col("customer_id") == 6001).row(0, named=True)
    want = (medium["alpha"] + row["responses"]) / (medium["alpha"] + medium["beta"] + row["contacts"])
    assert row["response_rate"] == pytest.approx(want)
    # without segments: only the medium rows, as before
    _, plain = affinity_table(resp, ids, ["mail"])
    assert plain["segment"].is_null().all() and plain.height == 2


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("steering_priors") / "data"
    generate(out, 1500, seed=8)
    return out


def _toml(tmp_path, data, prior_by):
    p = tmp_path / "centile.toml"
    p.write_text(f'data = "{data}"\nseed = 3\n[steering]\nperiods = 6\ncap = 2\ngap = 1\n'
                 f'prior_by = "{prior_by}"\nprior_min_customers = 50\n'
                 "[steering.media.sale]\ncost = 0.35\n[steering.media.email]\ncost = 0.01\n")
    return p


def test_steer_with_priors_by_a_customers_column(data, tmp_path):
    from centile.steering.job import run_steering

    res = run_steering(load_config(_toml(tmp_path, data, "region")), tmp_path / "out")
    pri = pl.read_parquet(tmp_path / "out" / "affinity_priors.parquet")
    regions = pl.read_parquet(data / "customers.parquet")["region"].unique().drop_nulls()
    seg = pri.filter(pl.col("segment").is_not_null() & (pl.col("arm") == "treatment"))
    assert set(regions.to_list()) <= set(seg["segment"].to_list())
    assert (~seg["fallback"]).any()
    assert any("priors by region" in n for n in res.notes)


def test_prior_by_an_unknown_column_is_an_input_error(data, tmp_path):
    from centile.steering.job import run_steering

    with pytest.raises(InputError, match="prior_by = 'regoin'"):
        run_steering(load_config(_toml(tmp_path, data, "regoin")), tmp_path / "out")


def test_centile_run_fits_priors_by_rfm_segment(data, tmp_path):
    from centile.run import run_pipeline

    res = run_pipeline(load_config(_toml(tmp_path, data, "rfm_segment")), tmp_path / "out")
    assert res.stages["steering"]["status"] == "ran"
    pri = pl.read_parquet(tmp_path / "out" / "affinity_priors.parquet")
    seg = pl.read_parquet(tmp_path / "out" / "segments.parquet")["rfm_segment"].unique().drop_nulls()
    assert set(seg.to_list()) <= set(pri["segment"].drop_nulls().to_list())
