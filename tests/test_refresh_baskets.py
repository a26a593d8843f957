"""The refresh state's basket lines (issue 17): order ids of the batches' own type."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import MappingProxyType

import polars as pl
import pytest

from centile.backend.session import open_session
from centile.baskets.lines import basket_lines
from centile.config import Config, TableSpec
from centile.errors import InputError
from centile.refresh import ingest
from tests.refresh_baskets_checks import canonical, state_lines
from tests.test_refresh import state_cfg


def _batch(folder: Path, name: str, ids: list, dtype: pl.DataType) -> Path:
    path = folder / name
    n = len(ids)
    pl.DataFrame({"customer_id": [1, 2, 1][:n], "order_id": pl.Series(ids, dtype=dtype),
                  "order_ts": [dt.datetime(2024, 3, 1, 9 + i) for i in range(n)], "unit_price": [5.0] * n,
                  "quantity": [1.0, 2.0, 1.0][:n], "returned_quantity": [0.0, 2.0, 0.0][:n],
                  "product_id": [1, 2, 3][:n]}).write_parquet(path)
    return path


def test_integer_order_ids_of_several_widths_stay_integers(tmp_path):
    b1 = _batch(tmp_path, "b1.parquet", [7, 8], pl.Int32)
    b2 = _batch(tmp_path, "b2.parquet", [9, 7, 10], pl.Int64)
    ingest(state_cfg(), tmp_path / "s", [b1])
    ingest(state_cfg(), tmp_path / "s", [b2])  # another integer width: accepted
    as_of = dt.date(2024, 3, 2)
    cfg = Config(tables=MappingProxyType({"orders": TableSpec("orders", (str(b1), str(b2)), "parquet")}),
                 as_of=as_of)
    with open_session(cfg) as s:
        want = basket_lines(s, "product", exclude_returned=False)
    got = state_lines(state_cfg(), tmp_path / "s", as_of, "product", 2)
    assert got.schema["order_id"] == pl.Int64
    assert canonical(got.with_columns(pl.col("order_id").cast(want.schema["order_id"]))).equals(canonical(want))
    assert not got.filter(pl.col("order_id") == 8)["kept"].any()  # returned in full


def test_a_batch_with_text_order_ids_after_integer_ones_is_refused(tmp_path):
    ingest(state_cfg(), tmp_path / "s", [_batch(tmp_path, "b1.parquet", [7], pl.Int64)])
    with pytest.raises(InputError, match=r"order ids are VARCHAR where the state's are BIGINT"):
        ingest(state_cfg(), tmp_path / "s", [_batch(tmp_path, "b2.parquet", ["x7"], pl.String)])
