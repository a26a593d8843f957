"""``centile baskets`` and ``centile recommend`` through Typer's CliRunner; assertions on the files written."""

import json

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from centile.synth import generate

    root = tmp_path_factory.mktemp("baskets_cli")
    generate(root / "data", 800, seed=21)
    orders = pl.read_parquet(root / "data" / "orders")
    seg = orders.select("customer_id").unique().sort("customer_id").with_columns(
        tier=pl.when(pl.col("customer_id") % 3 == 0).then(pl.lit("gold")).otherwise(pl.lit("basic")))
    seg.write_parquet(root / "segments.parquet")
    return root


def test_baskets_writes_rules_per_segment(data, tmp_path):
    out = tmp_path / "out"
    r = runner.invoke(app, ["baskets", "--data", str(data / "data"), "--out", str(out), "--segments",
                            str(data / "segments.parquet"), "--segment-by", "tier", "--min-count", "2"])
    assert r.exit_code == 0, r.output
    summary = pl.read_parquet(out / "basket_summary.parquet")
    assert summary.filter(pl.col("segment_by") == "tier")["segment"].sort().to_list() == ["basic", "gold"]
    assert (out / "basket_rules.parquet").exists() and (out / "manifest.json").exists()
    assert "Top 15 rules overall" in r.stdout
    r = runner.invoke(app, ["baskets", "--data", str(data / "data"), "--out", str(tmp_path / "cat"), "--level",
                            "category", "--min-support", "0.001", "--max-size", "3", "--all-splits", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["level"] == "category" and doc["baskets"] > 0
    its = pl.read_parquet(tmp_path / "cat" / "basket_itemsets.parquet")
    assert its.filter(pl.col("size") == 3).height > 0


def test_recommend_and_evaluate(data, tmp_path):
    out = tmp_path / "rec"
    r = runner.invoke(app, ["recommend", "--data", str(data / "data"), "--out", str(out), "-k", "3", "--evaluate",
                            "--cutoff", "2025-07-01", "--segments", str(data / "segments.parquet"),
                            "--segment-by", "tier", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert {e["model"] for e in doc["evaluation"]} == {"centile", "popularity"}
    ev = pl.read_parquet(out / "recommendation_eval.parquet")
    assert ev["k"].to_list() == [3] * 4
    recs = pl.read_parquet(out / "recommendations.parquet")
    assert recs["rank"].max() == 3


@pytest.mark.parametrize(("args", "msg"), [
    (["baskets", "--level", "sku"], "level"),
    (["recommend", "--evaluate"], "--cutoff"),
    (["recommend", "--evaluate", "--cutoff", "2040-01-01"], "cutoff"),
    (["baskets", "--segment-by", "nope", "--segments", "SEG"], "nope"),
])
def test_bad_input_exits_1_with_a_message(data, tmp_path, args, msg):
    args = [str(data / "segments.parquet") if a == "SEG" else a for a in args]
    r = runner.invoke(app, [*args, "--data", str(data / "data"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 1, r.output
    assert msg in r.output
