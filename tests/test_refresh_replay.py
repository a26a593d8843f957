"""Replay of The Complete Journey in weekly batches: the refresh state's features, CLV summary,
steering history, order totals (uplift, attribution) and basket lines equal the full run."""

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


def _cfg(paths: tuple[str, ...] = (), contacts: Path | None = None, **kw) -> Config:
    tables = {"products": TableSpec("products", (str(DATA / "products.parquet"),), "parquet",
                                    columns=MappingProxyType({"product_id": "product_id", "category": "department"})),
              "customers": TableSpec("customers", (str(DATA / "demographics.parquet"),), "parquet",
                                     columns=MappingProxyType({"customer_id": "household_id"})),
              "orders": TableSpec("orders", paths, "parquet", columns=COLUMNS, filter="quantity > 0")}
    if contacts is not None:
        tables["contacts"] = TableSpec("contacts", (str(contacts),), "parquet")
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
    contacts = _contacts(tmp_path)
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
                # the uplift's rows per order and attribution's conversions from the state's order totals
                _order_totals_equal(state, s)
                # the basket lines: the product's and the department's (from products) items
                lines = assert_session_lines_equal(_cfg(as_of=as_of), state, s, as_of, count=3)
                assert min(df.height for df in lines.values()) > 100_000
            _steering_history_equal(state, full, contacts, as_of)


def _contacts(folder: Path) -> Path:
    """The campaigns as contacts: each household of a campaign contacted at its start, the
    campaign type as the medium."""
    path = folder / "contacts.parquet"
    camp = pl.read_parquet(DATA / "campaigns.parquet").join(
        pl.read_parquet(DATA / "campaign_descriptions.parquet"), on="campaign_id")
    camp.select(customer_id="household_id", campaign_id="campaign_id",
                sent_ts=pl.col("start_date").cast(pl.Datetime("us")), medium="campaign_type").write_parquet(path)
    return path


def _steering_history_equal(state: Path, full: tuple[str, ...], contacts: Path, as_of: dt.date) -> None:
    """The steering stage's spend, category spend (none here: the lines have no category column, and
    steering reads the line's own) and response counts from the state equal the ones over the lines."""
    from centile.refresh.steering import state_history
    from centile.steering.history import OrderHistory

    with open_session(_cfg(full, contacts, as_of=as_of)) as s:
        lines, kept = OrderHistory(s), state_history(_cfg(as_of=as_of), state, s)
        spend = lines.spend().sort("customer_id")
        assert spend.height > 2000 and kept.spend().sort("customer_id").equals(spend)
        assert lines.category_spend().height == 0 and kept.category_spend().height == 0
        keys = ["customer_id", "medium", "control"]
        resp = lines.responses(as_of, 14).sort(keys)
        assert resp["responses"].sum() > 100 and kept.responses(as_of, 14).sort(keys).equals(resp)


def _order_totals_equal(state: Path, s) -> None:
    from centile.backend.partitions import Partitioning
    from centile.io.sqlfiles import read_sql
    from centile.refresh.order_totals import StateOrders
    from centile.refresh.state import read_manifest
    from centile.uplift.inputs import has_unit_cost, order_rows_sql

    totals, keys = StateOrders.of(state, read_manifest(state)), ["customer_id", "order_id"]
    with totals.registered(s, Partitioning(1), 0) as rows:
        got, want = s.frame(rows).sort(keys), s.frame(order_rows_sql(s, has_unit_cost(s))).sort(keys)
        assert got.height > 10_000 and got.equals(want)
        assert s.frame(totals.conversions_sql(rows)).sort(keys).equals(
            s.frame(read_sql("attribution_conversions")).sort(keys))
