"""Clubs over feature tables: config clubs in SQL, sizes, skips, determinism, outputs and CLI."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app
from centile.clubs import form_clubs, tier_sizes
from centile.config import ClubSpec, load_config
from centile.errors import ConfigError, OutputError

runner = CliRunner()


def _features(n: int = 1000, seed: int = 3, with_email: bool = True) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    orders = rng.poisson(2, n).astype(np.int32)
    df = pl.DataFrame({
        "customer_id": rng.permutation(np.arange(10_000, 10_000 + n)),
        "orders_12m": orders,
        "net_revenue_12m": np.round(rng.gamma(2, 50, n) * (orders > 0), 0),   # many ties
        "gross_revenue_12m": rng.gamma(2, 60, n),
        "returned_value_12m": np.round(rng.gamma(1, 10, n), 0),
        "max_price_kept_24m": np.where(rng.random(n) < 0.8, np.round(rng.gamma(2, 20, n)), np.nan),
        "premium_margin_12m": np.where(rng.random(n) < 0.5, rng.normal(10, 20, n), 0.0),
        "net_revenue_lifetime": rng.gamma(2, 200, n),
        "tenure_days": rng.integers(0, 1500, n).astype(np.int32),
        "emails_sent_12m": rng.integers(0, 12, n).astype(np.int32),
        "open_rate_12m": np.round(rng.random(n), 1),
        "click_rate_12m": np.round(rng.random(n) / 2, 1),
        "region": rng.choice(["north", "south", "east"], n),
    }, strict=False).with_columns(pl.col("max_price_kept_24m").fill_nan(None))
    if not with_email:
        df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias("click_rate_12m"),
                             pl.lit(None, dtype=pl.Float64).alias("open_rate_12m"))
    return df


def _cfg(tmp_path, text: str = ""):
    """A config whose clubs section is ``text`` (an orders file exists only to satisfy the loader)."""
    pl.DataFrame({"customer_id": [1], "order_ts": [None], "unit_price": [1.0]},
                 schema={"customer_id": pl.Int64, "order_ts": pl.Datetime, "unit_price": pl.Float64}
                 ).write_parquet(tmp_path / "orders.parquet")
    f = tmp_path / "centile.toml"
    f.write_text('data = "."\n' + text)
    return load_config(f, feature_columns=_features().columns)  # a feature table built in the test


def test_tier_sizes_use_the_whole_universe():
    clubs = (ClubSpec("a", "x", shares=(0.01, 0.05)), ClubSpec("b", "y", shares=(0.07,)))
    assert tier_sizes(clubs, 1000).tolist() == [[10, 50], [70, 0]]
    assert tier_sizes(clubs, 101).tolist() == [[2, 6], [8, 0]]


def test_default_clubs_sizes_overlap_and_membership(tmp_path):
    f = _features()
    res = form_clubs(f, _cfg(tmp_path))
    m = res.clubs
    assert m["customer_id"].n_unique() == m.height  # overlap-free
    s = res.summary
    assert (s["size"] <= s["target_size"]).all()
    assert s.filter(pl.col("tier") == 1)["target_size"].to_list() == [10] * 6
    # every member of frequency_champions tier 1 meets the eligibility predicate
    fc = m.filter(pl.col("club") == "frequency_champions").join(f, on="customer_id")
    assert (fc["orders_12m"] >= 1).all()
    rw = m.filter(pl.col("club") == "responders_without_purchase").join(f, on="customer_id")
    assert ((rw["emails_sent_12m"] >= 3) & (rw["orders_12m"] == 0)).all()
    # qualified_for holds the member's club exactly when it sits within the club's cumulative
    # share before overlap removal (position < sum of its tier sizes)
    cum = dict(s.group_by("club").agg(pl.col("target_size").sum()).iter_rows())
    for c, q, pos in zip(m["club"], m["qualified_for"], m["position"], strict=True):
        assert (c in q) == (pos < cum[c])
    # score is the club metric; rank/pct_rank come from ranks.parquet
    row = m.filter(pl.col("club") == "frequency_champions").row(0, named=True)
    assert row["score"] == f.filter(pl.col("customer_id") == row["customer_id"])["orders_12m"][0]
    assert res.ranks.height == f.height and "lifetime_heroes_pct_rank" in res.ranks.columns


def test_pct_rank_matches_duckdb_percent_rank(tmp_path):
    f = _features()
    res = form_clubs(f, _cfg(tmp_path))
    got = res.ranks.select("customer_id", "heavy_returners_pct_rank", "heavy_returners_rank")
    want = duckdb.sql("""
        SELECT customer_id, percent_rank() OVER (ORDER BY returned_value_12m) AS p,
               rank() OVER (ORDER BY returned_value_12m DESC) AS r
        FROM f WHERE orders_12m >= 2 AND returned_value_12m > 0""").pl()
    both = got.join(want, on="customer_id", how="left")
    eligible = both.filter(pl.col("p").is_not_null())
    assert (eligible["heavy_returners_pct_rank"] == eligible["p"]).all()
    assert (eligible["heavy_returners_rank"] == eligible["r"]).all()
    assert both.filter(pl.col("p").is_null())["heavy_returners_pct_rank"].null_count() == \
        both.filter(pl.col("p").is_null()).height


def test_input_order_does_not_change_clubs(tmp_path):
    f = _features()
    cfg = _cfg(tmp_path)
    a = form_clubs(f, cfg).clubs.sort("customer_id")
    b = form_clubs(f.reverse(), cfg).clubs.sort("customer_id")
    assert a.drop("position").equals(b.drop("position"))


def test_seed_changes_only_exact_ties(tmp_path):
    f = _features()
    a = form_clubs(f, _cfg(tmp_path)).clubs
    b = form_clubs(f, _cfg(tmp_path, "seed = 99\n")).clubs
    assert a.height == b.height
    # members differ only where the boundary cut through exact ties
    assert set(a["club"].to_list()) == set(b["club"].to_list())


def test_unavailable_club_is_skipped_not_zero_filled(tmp_path):
    res = form_clubs(_features(with_email=False), _cfg(tmp_path))
    assert "responders_without_purchase" in res.skipped
    assert "responders_without_purchase" not in res.clubs["club"].to_list()
    assert any("responders_without_purchase skipped" in n for n in res.notes)


def test_user_defined_club_in_sql_with_direction_and_groups(tmp_path):
    text = """
[clubs]
group_by = "region"
[[clubs.club]]
name = "big_baskets"
metric = "net_revenue_12m / nullif(orders_12m, 0)"
eligible = "orders_12m >= 1"
shares = [0.02]
[[clubs.club]]
name = "newest"
metric = "tenure_days"
direction = "asc"
eligible = "orders_12m >= 1"
shares = [0.01, 0.01]
"""
    f = _features()
    res = form_clubs(f, _cfg(tmp_path, text))
    assert res.summary["club"].to_list() == ["big_baskets", "newest", "newest"]
    assert res.summary["target_size"].to_list() == [20, 10, 10]
    newest = res.clubs.filter(pl.col("club") == "newest").join(f, on="customer_id")
    others = f.filter((pl.col("orders_12m") >= 1) & ~pl.col("customer_id").is_in(res.clubs["customer_id"].implode()))
    assert newest["tenure_days"].max() <= others["tenure_days"].min()
    assert {"big_baskets_group_rank", "rank_group"} <= set(res.ranks.columns)
    # within-group pct_rank matches DuckDB's PARTITION BY
    want = duckdb.sql("""SELECT customer_id, percent_rank() OVER (PARTITION BY region ORDER BY tenure_days DESC) AS p
                         FROM f WHERE orders_12m >= 1""").pl()
    got = res.ranks.join(want, on="customer_id", how="inner")
    assert (got["newest_group_pct_rank"] == got["p"]).all()


def test_bad_club_sql_names_the_club(tmp_path):
    text = '[[clubs.club]]\nname = "x"\nmetric = "no_such_feature"\n'
    with pytest.raises(ConfigError, match="club x.*no_such_feature"):
        form_clubs(_features(), _cfg(tmp_path, text))


def test_short_tier_is_reported(tmp_path):
    text = '[[clubs.club]]\nname = "rare"\nmetric = "orders_12m"\neligible = "orders_12m >= 7"\nshares = [0.5]\n'
    f = _features()
    res = form_clubs(f, _cfg(tmp_path, text))
    n_elig = f.filter(pl.col("orders_12m") >= 7).height
    assert res.summary["size"].to_list() == [n_elig] and res.summary["target_size"].to_list() == [500]
    assert any("too few eligible" in n for n in res.notes)


def test_best_rank_strategy_fills_exact_sizes(tmp_path):
    res = form_clubs(_features(5000), _cfg(tmp_path), strategy="best-rank")
    s = res.summary
    assert (s["size"] == s["target_size"]).all()
    assert res.clubs["customer_id"].n_unique() == res.clubs.height


def test_stability_against_previous(tmp_path):
    cfg = _cfg(tmp_path)
    f = _features()
    first = tmp_path / "first"
    first.mkdir()
    r1 = form_clubs(f, cfg)
    r1.clubs.write_parquet(first / "clubs.parquet")
    f2 = f.with_columns(pl.when(pl.col("customer_id") % 7 == 0).then(pl.col("orders_12m") + 5)
                        .otherwise(pl.col("orders_12m")).alias("orders_12m"))
    r2 = form_clubs(f2, cfg, previous=first)
    st = r2.stability
    fc = st.filter(pl.col("club") == "frequency_champions").row(0, named=True)
    assert fc["members"] == fc["stayed"] + fc["joined"]
    prev_fc = r1.clubs.filter(pl.col("club") == "frequency_champions").height
    assert prev_fc == fc["stayed"] + fc["left"]
    assert fc["joined"] > 0
    same = form_clubs(f, cfg, previous=first).stability
    assert (same["joined"] == 0).all() and (same["left"] == 0).all()
    with pytest.raises(OutputError):
        form_clubs(f, cfg, previous=tmp_path / "nowhere")


def test_cli_run_then_clubs_from_features_with_previous(tmp_path):
    from centile.synth import generate

    data = tmp_path / "data"
    generate(data, 3000, seed=5)
    out = tmp_path / "out"
    r = runner.invoke(app, ["run", "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "frequency_champions" in r.stdout
    names = {p.name for p in out.iterdir()}
    assert {"features.parquet", "ranks.parquet", "clubs.parquet", "club_summary.parquet",
            "rejects.parquet", "manifest.json"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["rows"]["clubs"] == pl.read_parquet(out / "clubs.parquet").height
    assert {"features", "clubs"} <= set(manifest["timings_s"])
    out2 = tmp_path / "out2"
    r = runner.invoke(app, ["clubs", "--features", str(out / "features.parquet"), "--out", str(out2),
                            "--previous", str(out), "--strategy", "priority", "-c", str(_cfg(tmp_path).source),
                            "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert all(row["joined"] == 0 and row["left"] == 0 for row in doc["stability"])
    assert pl.read_parquet(out2 / "clubs.parquet").equals(pl.read_parquet(out / "clubs.parquet"))


@pytest.mark.parametrize("strategy", ["priority", "best-rank"])
def test_same_clubs_with_one_thread_and_all_threads(tmp_path, strategy):
    import numba

    f = _features(3000)
    all_threads = numba.get_num_threads()
    try:
        one = form_clubs(f, _cfg(tmp_path, "threads = 1\n"), strategy=strategy)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = form_clubs(f, _cfg(tmp_path), strategy=strategy)
    finally:
        numba.set_num_threads(all_threads)
    assert one.clubs.equals(many.clubs)
    assert one.ranks.equals(many.ranks)
