"""Basket lines, baskets as CSR over item codes, and customers' segment codes (pure: frames in, arrays out).

A basket is one order of one customer (``(customer_id, order_id)``; without order ids the orders
view uses the order day); an item counts once per basket.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from centile.errors import InputError
from centile.io.sqlfiles import read_sql

if TYPE_CHECKING:
    from centile.backend.session import Session

OVERALL = "all"
NO_SEGMENT = "(none)"


@dataclass(frozen=True)
class Baskets:
    """Baskets as CSR over dense item codes (codes follow the sorted item values)."""

    offsets: np.ndarray  # int64, n_baskets + 1
    items: np.ndarray  # int64 codes, increasing inside a basket
    customer: np.ndarray  # int64 row of the basket's customer in ``customers``
    excluded: np.ndarray  # customer rows of the baskets over max_basket_items (left out)




# ---------------------------------------------------------------------------
# lines and baskets

def _item_column(s: Session, level: str) -> str:
    col = "product_id" if level == "product" else "category"
    if not s.has("orders", col) and not (level == "category" and s.has("products", "category")
                                         and s.has("orders", "product_id")):
        raise InputError(f"orders: basket analysis at level {level!r} needs the column `{col}` in the orders "
                         f"(or products.category with orders.product_id); map it in [tables.orders.columns] "
                         f"or use --level {'category' if level == 'product' else 'product'}")
    return col


def _lines_sql(col: str, exclude_returned: bool) -> str:
    return (f"FROM ({read_sql('baskets_lines')}) AS l WHERE {col} IS NOT NULL"
            + (" AND NOT returned_in_full" if exclude_returned else ""))


def basket_lines(s: Session, level: str, exclude_returned: bool = True) -> pl.DataFrame:
    """customer_id, order_id, order_ts, item, kept: the valid positive lines with an item at ``level``
    (of the customers the session's views hold: every customer, or one partition's).

    ``kept`` is false for lines returned in full; with ``exclude_returned`` they are left out here.
    """
    col = _item_column(s, level)
    return s.frame(f"SELECT customer_id, order_id, order_ts, {col} AS item, NOT returned_in_full AS kept "
                   + _lines_sql(col, exclude_returned))


def basket_items(s: Session, level: str, exclude_returned: bool = True, *,
                 label: str = "baskets: item dictionary") -> pl.Series:
    """The sorted distinct items of :func:`basket_lines` (the item dictionary), without building the
    lines; on a cluster each partition's items come from its worker, merged there."""
    from centile.backend.session import sorted_union

    items = s.everywhere(label, _distinct_items, sorted_union, level, exclude_returned,
                         tables=("orders", "products"))
    return items.get_column("item").sort()


def _distinct_items(s: Session, level: str, exclude_returned: bool) -> pl.DataFrame:
    col = _item_column(s, level)
    return s.frame(f"SELECT DISTINCT {col} AS item " + _lines_sql(col, exclude_returned) + " ORDER BY 1")


def item_dictionary(lines: pl.DataFrame) -> pl.Series:
    """The sorted distinct items; an item's code is its position."""
    return lines.get_column("item").unique().sort()


def build_baskets(lines: pl.DataFrame, items: pl.Series, customers: pl.Series,
                  max_basket_items: int) -> Baskets:
    """CSR baskets of ``lines`` (customer_id, order_id, item) in (customer, order) order.

    ``customers`` is the sorted customer universe; ``items`` the dictionary.
    Baskets with more than ``max_basket_items`` distinct items are left out and counted.
    """
    codes = pl.DataFrame({"item": items, "code": np.arange(items.len(), dtype=np.int64)})
    cust = pl.DataFrame({"customer_id": customers, "crow": np.arange(customers.len(), dtype=np.int64)})
    df = (lines.select("customer_id", "order_id", "item").join(codes, on="item", how="inner")
          .join(cust, on="customer_id", how="inner")
          .select("crow", "order_id", "code")
          .sort("crow", "order_id", "code"))
    # one pass over the sorted lines: a new basket where (customer, order) changes; a repeated
    # item inside a basket is dropped (an item counts once per basket)
    df = df.with_columns(new=(pl.col("crow") != pl.col("crow").shift(1)).fill_null(True)
                         | (pl.col("order_id") != pl.col("order_id").shift(1)).fill_null(True))
    df = df.filter(pl.col("new") | (pl.col("code") != pl.col("code").shift(1)).fill_null(True))
    if df.height == 0:
        empty = np.zeros(0, np.int64)
        return Baskets(np.zeros(1, np.int64), empty, empty, empty)
    crow = df.get_column("crow").to_numpy()
    starts = np.flatnonzero(df.get_column("new").to_numpy())
    offsets = np.append(starts, df.height).astype(np.int64)
    sizes = np.diff(offsets)
    keep = sizes <= max_basket_items
    items_arr = df.get_column("code").to_numpy().astype(np.int64)
    excluded = crow[starts[~keep]].astype(np.int64)
    if excluded.size:
        line_keep = np.repeat(keep, sizes)
        items_arr = items_arr[line_keep]
        offsets = np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64)
        starts = starts[keep]
    return Baskets(offsets, np.ascontiguousarray(items_arr), crow[starts].astype(np.int64), excluded)


def subset(b: Baskets, mask: np.ndarray) -> Baskets:
    """The baskets whose flag in ``mask`` (per basket) is set."""
    sizes = np.diff(b.offsets)
    items = b.items[np.repeat(mask, sizes)]
    offsets = np.concatenate([[0], np.cumsum(sizes[mask])]).astype(np.int64)
    return Baskets(offsets, np.ascontiguousarray(items), b.customer[mask], np.zeros(0, np.int64))


# ---------------------------------------------------------------------------
# segments

def segment_codes(customers: pl.Series, segments: pl.DataFrame | None,
                  columns: tuple[str, ...]) -> tuple[list[tuple[str, list[str], np.ndarray]], list[str]]:
    """Per segmentation column: its sorted values and each customer's value code.

    Customers without a value get ``(none)``. Columns absent from ``segments`` are noted and skipped.
    """
    out: list[tuple[str, list[str], np.ndarray]] = []
    notes: list[str] = []
    for col in columns:
        if segments is None or col not in segments.columns:
            notes.append(f"baskets: no segment column {col!r} in this run; rules per {col} are skipped")
            continue
        seg = segments.select("customer_id", pl.col(col).cast(pl.String).alias("v")).unique("customer_id",
                                                                                          keep="first")
        v = (pl.DataFrame({"customer_id": customers}).join(seg, on="customer_id", how="left", maintain_order="left")
             .get_column("v").fill_null(NO_SEGMENT))
        values = v.unique().sort().to_list()
        codes = v.cast(pl.Enum(values)).to_physical().to_numpy().astype(np.int64)
        out.append((col, values, codes))
    return out, notes
