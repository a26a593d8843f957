"""Replay of The Complete Journey in weekly batches: the refresh state's features, CLV summary and basket
lines equal the full run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest

from centile.backend.session import open_session
from centile.clv.compute import OrderDays, summarize
from centile.config import Config, TableSpec
from centile.features.compute import compute_features
from centile.refresh import features_from_state, ingest
from centile.refresh.clv import state_days
from tests.refresh_baskets_checks import assert_session_lines_equal

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "completejourney"

pytestmark = pytest.mark.skipif(not (DATA / "transactions.parquet").exists(),
                                reason=f"real data not found at {DATA} (../shared/data beside the clone)")

#: engine/examples/completejourney.toml's mapping: orders, products (categories from the
#: department: the lines have no category column) and the demographics as customers
COLUMNS = MappingProxyType({"customer_id": "household_id", "order_id": "basket_id",
                            "order_ts": "transaction_timestamp", "quantity": "quantity",
                            "unit_price": "sales_value / nullif(quantity, 0)", "product_id": "product_id",
                            "channel": "'store ' || store_id"})


def _cfg(paths: tuple[str, ...] = (), **kw) -> Config:
    tables = {"products": TableSpec("products", (str(DATA / "products.parquet"),), "parquet",
                                    columns=MappingProxyType({"product_id": "product_id", "category": "department"})),
              "customers": TableSpec("customers", (str(DATA / "demographics.parquet"),), "parquet",
                                     columns=MappingProxyType({"customer_id": "household_id"})),
              "orders": TableSpec("orders", paths, "parquet", columns=COLUMNS, filter="quantity > 0")}
    refresh = MappingProxyType({"refresh": MappingProxyType({"partitions": 2})})
    return Config(tables=MappingProxyType(tables), sections=refresh, **kw)


def test_weekly_batches_equal_the_full_run(tmp_path):
    tx = pl.read_parquet(DATA / "transactions.parquet")
    weeks = sorted(tx["week"].unique().to_list())
    files = []
    for w in weeks:
        path = tmp_path / f"week-{w:02d}.parquet"
        tx.filter(pl.col("week") == w).write_parquet(path)
        files.append(path)
    del tx
    state = tmp_path / "state"
    checks = {weeks[len(weeks) // 3], weeks[-1]}
    for i, (w, path) in enumerate(zip(weeks, files, strict=True)):
        ingest(_cfg(), state, [path])
        if w not in checks:
            continue
        wm = features_from_state(_cfg(), state)[3]
        # the full run reads the weeks applied so far; at the end, the original file itself
        full = tuple(map(str, files[:i + 1])) if w != weeks[-1] else (str(DATA / "transactions.parquet"),)
        for as_of in ((wm, wm + dt.timedelta(days=45)) if w == weeks[-1] else (wm,)):
            got = features_from_state(_cfg(as_of=as_of), state)[0]
            with open_session(_cfg(full, as_of=as_of)) as s:
                want, _, _ = compute_features(s)
                assert got.height > 2000 and got.columns == want.columns and got.dtypes == want.dtypes
                assert "top_category" in got.columns and got["top_category"].null_count() < got.height
                assert got.equals(want)
                # the CLV summary from the state's purchase days: the same rows as over the lines
                days = state_days(_cfg(as_of=as_of), state)
                want_clv, got_clv = summarize(s), summarize(s, days=days)
                assert got_clv.frame.height > 2000 and got_clv.frame.equals(want_clv.frame)
                cal = want_clv.calibration_end
                assert days.value_total(cal) == OrderDays(s).value_total(cal)
                # the basket lines: the product's and the department's (from products) items
                lines = assert_session_lines_equal(_cfg(as_of=as_of), state, s, as_of, count=3)
                assert min(df.height for df in lines.values()) > 100_000
