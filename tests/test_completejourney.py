"""The shipped Complete Journey config runs through `validate` and `features` on the real data."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from centile.cli import app

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "completejourney"
CONFIG = ROOT / "engine" / "examples" / "completejourney.toml"

pytestmark = pytest.mark.skipif(not (DATA / "transactions.parquet").exists(),
                                reason=f"real data not found at {DATA} (../shared/data beside the clone)")
runner = CliRunner()


def test_validate_completejourney():
    r = runner.invoke(app, ["validate", "-c", str(CONFIG), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    orders = doc["tables"]["orders"]
    assert orders["rows_read"] == 1_469_307
    assert orders["rows_filtered_by_config"] == 8_869  # quantity 0
    assert orders["rows_valid"] + orders["rows_rejected"] == 1_469_307 - 8_869
    assert orders["customers"] == 2_469
    assert doc["tables"]["customers"]["rows_valid"] == 801
    assert "premium_margin_12m" in doc["features_skipped"]  # no market prices in this data


def test_features_completejourney(tmp_path):
    out = tmp_path / "cj"
    r = runner.invoke(app, ["features", "-c", str(CONFIG), "--out", str(out)])
    assert r.exit_code == 0, r.output
    f = pl.read_parquet(out / "features.parquet")
    tx = pl.read_parquet(DATA / "transactions.parquet").filter(pl.col("quantity") > 0)
    valid = tx.filter(pl.col("sales_value") >= 0)
    # households: every one with a basket (demographics households all shop)
    assert f.height == tx["household_id"].n_unique() == 2_469
    assert f["orders_total"].sum() == valid.filter(pl.col("sales_value") >= 0)["basket_id"].n_unique()
    assert f["net_revenue_lifetime"].sum() == pytest.approx(valid["sales_value"].sum(), rel=1e-9)
    assert f["top_category"].null_count() < 10
    assert any(c.startswith("share_") for c in f.columns)
