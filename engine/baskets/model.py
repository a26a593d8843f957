"""The item-item model of the recommendations, fitted from counts that merge across customer partitions.

:class:`CoCounts` holds what every partition adds: the number of baskets, the baskets per item and
every co-occurring pair's count (all integers, summed; no threshold inside a partition), and, for the
popularity fallback, the baskets per item within each segment. :meth:`CoCounts.model` derives the
scores at the end: cosine c(ij)/√(c(i)c(j)) or lift N·c(ij)/(c(i)c(j)) for the pairs held by at
least ``min_pair_count`` baskets, the best ``max_neighbors`` per item. Any partitioning gives the
same counts and so the same model.

:func:`histories` turns one partition's lines into each customer's recency-weighted items.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from centile.baskets.lines import NO_SEGMENT, build_baskets, subset
from centile.baskets.settings import RecommendSettings
from centile.kernels.pairs import item_counts, merge_counts, pair_counts

_UNITS = 1_000_000_000  # history weights are summed in units of 1e-9
#: baskets with more items do not enter the co-occurrence counts (they still count for popularity)
FIT_MAX_BASKET_ITEMS = 200


@dataclass(frozen=True)
class Model:
    """A fitted item-item model over the item dictionary ``items``."""

    items: pl.Series
    n_off: np.ndarray
    n_items: np.ndarray
    n_score: np.ndarray
    popularity: np.ndarray  # baskets per item code


@dataclass(frozen=True)
class Segments:
    """Each customer's popularity segment: the sorted values of ``column`` plus ``(none)``, and a
    lookup from customer_id to the value's code."""

    column: str | None
    values: list[str]
    lookup: pl.DataFrame | None  # customer_id, code

    @staticmethod
    def values_of(segments: pl.DataFrame, column: str) -> list[str]:
        """The sorted segment values of ``column`` plus ``(none)``: the codes' dictionary."""
        first = segments.unique("customer_id", keep="first", maintain_order=True)  # as the codes are taken
        return sorted(set(first.get_column(column).cast(pl.String).drop_nulls().unique().to_list()) | {NO_SEGMENT})

    @staticmethod
    def of(segments: pl.DataFrame | None, column: str | None, id_type: pl.DataType,
           notes: list[str], values: list[str] | None = None) -> Segments:
        """``values``: the dictionary of every customer's segments (:meth:`values_of`) when
        ``segments`` holds one partition's customers only, so that codes agree across partitions."""
        if column is None:
            return Segments(None, [NO_SEGMENT], None)
        if segments is None or column not in segments.columns:
            notes.append(f"recommend: no segment column {column!r}; the popularity fallback is overall")
            return Segments(None, [NO_SEGMENT], None)
        seg = (segments.select(pl.col("customer_id").cast(id_type), pl.col(column).cast(pl.String).alias("v"))
               .unique("customer_id", keep="first").filter(pl.col("v").is_not_null()))
        if values is None:
            values = Segments.values_of(segments, column)
        codes = seg.select("customer_id", pl.col("v").cast(pl.Enum(values)).to_physical().cast(pl.Int64)
                           .alias("code"))
        return Segments(column, values, codes)

    @property
    def count(self) -> int:
        return len(self.values)

    def codes(self, customers: pl.Series) -> np.ndarray:
        """The segment code of each of ``customers``."""
        if self.lookup is None:
            return np.zeros(customers.len(), np.int64)
        none = self.values.index(NO_SEGMENT)
        return (pl.DataFrame({"customer_id": customers})
                .join(self.lookup, on="customer_id", how="left", maintain_order="left")
                .get_column("code").fill_null(none).to_numpy().astype(np.int64))


@dataclass
class CoCounts:
    """Mergeable counts for the model (see the module doc)."""

    m: int
    n_segments: int = 1
    #: pairs held by fewer baskets of one partition are not kept: 1 when there are several partitions
    #: (a pair rare in each can be frequent overall), ``min_pair_count`` when one partition is everything
    least: int = 1
    n: int = 0
    items: np.ndarray = field(default=None)  # type: ignore[assignment]
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # a * m + b, a < b, sorted
    pairs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    segment_items: np.ndarray = field(default=None)  # type: ignore[assignment]  # (n_segments, m)

    def __post_init__(self) -> None:
        if self.items is None:
            self.items = np.zeros(self.m, np.int64)
        if self.segment_items is None:
            self.segment_items = np.zeros((self.n_segments, self.m), np.int64)

    def add(self, kept: pl.DataFrame, items: pl.Series, segments: Segments | None = None) -> None:
        """Add the baskets of one partition's kept lines (customer_id, order_id, item)."""
        customers = kept.get_column("customer_id").unique().sort()
        b = build_baskets(kept, items, customers, 1 << 62)
        sizes = np.diff(b.offsets)
        if segments is not None and self.n_segments > 1:  # popularity per segment: every basket
            per_line = np.repeat(segments.codes(customers)[b.customer], sizes)
            self.segment_items += np.bincount(per_line * self.m + b.items,
                                              minlength=self.n_segments * self.m).reshape(self.n_segments, self.m)
        fit = subset(b, sizes <= FIT_MAX_BASKET_ITEMS)
        del b
        self.n += int(fit.offsets.size - 1)
        self.items += item_counts(fit.offsets, fit.items, self.m)
        a, bb, c = pair_counts(fit.offsets, fit.items, self.m, self.least)
        self.keys, self.pairs = merge_counts(self.keys, self.pairs, a * np.int64(self.m) + bb, c)

    def model(self, st: RecommendSettings, items: pl.Series) -> Model:
        """Neighbour lists from the merged counts."""
        m = self.m
        keep = self.pairs >= st.min_pair_count
        pa, pb, pc = self.keys[keep] // m, self.keys[keep] % m, self.pairs[keep]
        ic = self.items
        n = float(self.n)
        ca, cb, cab = ic[pa].astype(np.float64), ic[pb].astype(np.float64), pc.astype(np.float64)
        score = cab / np.sqrt(ca * cb) if st.similarity == "cosine" else n * cab / (ca * cb)
        both = pl.DataFrame({"i": np.concatenate([pa, pb]), "j": np.concatenate([pb, pa]),
                             "s": np.concatenate([score, score])})
        both = (both.sort(["i", "s", "j"], descending=[False, True, False])
                .with_columns(r=pl.int_range(pl.len()).over("i")).filter(pl.col("r") < st.max_neighbors))
        i = both.get_column("i").to_numpy()
        off = np.zeros(m + 1, np.int64)
        np.add.at(off, i + 1, 1)
        return Model(items, np.cumsum(off), both.get_column("j").to_numpy().astype(np.int64),
                     both.get_column("s").to_numpy().astype(np.float64), ic)

    def popularity(self) -> tuple[np.ndarray, np.ndarray]:
        """The fallback order per segment (:func:`popularity_order`)."""
        rows = list(self.segment_items) if self.n_segments > 1 else [self.items]
        return popularity_order(self.items, rows)


def popularity_order(counts: np.ndarray, seg_counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: its items by basket count (descending, then code), then the rest by overall count."""
    m = counts.size
    overall = np.lexsort((np.arange(m), -counts))
    overall = overall[counts[overall] > 0]
    rows = []
    for sc in seg_counts:
        own = np.lexsort((np.arange(m), -sc))
        own = own[sc[own] > 0]
        seen = np.zeros(m, np.bool_)
        seen[own] = True
        rows.append(np.concatenate([own, overall[~seen[overall]]]))
    width = max((r.size for r in rows), default=0)
    out = np.full((max(len(rows), 1), width), -1, np.int64)
    lens = np.zeros(out.shape[0], np.int64)
    for g, r in enumerate(rows):
        out[g, : r.size] = r
        lens[g] = r.size
    return out, lens


def _order_key(order_id: pl.Series) -> np.ndarray:
    """An int64 per line that tells a customer's orders apart (the id itself when it is a number or a
    date, else its rank among the distinct ids)."""
    if order_id.dtype.is_numeric() or order_id.dtype.is_temporal():
        return order_id.to_physical().cast(pl.Int64).to_numpy()
    return order_id.rank("dense").cast(pl.Int64).to_numpy()


def _runs(*keys: np.ndarray) -> np.ndarray:
    """Start of every run of equal ``keys`` (sorted arrays of one length)."""
    n = keys[0].size
    change = np.zeros(n, np.bool_)
    if n:
        change[0] = True
        for k in keys:
            change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def histories(lines: pl.DataFrame, items: pl.Series, customers: pl.Series, as_of: dt.date,
              half_life_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (offsets, item codes, weights) of each customer's bought items, recency-decayed.

    A basket's item weighs ``0.5^(age_days / half_life_days)`` at the basket's first line (age in
    whole seconds), rounded to units of 1e-9 and summed per customer and item in integers. Lines
    with ``kept`` false (returned in full) make an item bought but add no weight unless the basket
    holds the item kept on another line. One sort of the lines by (customer, item, order), then runs.
    """
    codes = pl.DataFrame({"item": items, "code": np.arange(items.len(), dtype=np.int64)})
    cust = pl.DataFrame({"customer_id": customers, "crow": np.arange(customers.len(), dtype=np.int64)})
    kept = pl.col("kept") if "kept" in lines.columns else pl.lit(True)
    df = (lines.join(codes, on="item", how="inner").join(cust, on="customer_id", how="inner")
          .select("crow", "code", "order_id", pl.col("order_ts").dt.cast_time_unit("us"), kept.alias("kept")))
    df = df.with_columns(order_id=pl.Series(_order_key(df.get_column("order_id")))).sort("crow", "code", "order_id")
    crow, code = df.get_column("crow").to_numpy(), df.get_column("code").to_numpy()
    ts = df.get_column("order_ts").to_physical().to_numpy()
    basket = _runs(crow, code, df.get_column("order_id").to_numpy())  # one (customer, item, order) each
    kept_b = np.logical_or.reduceat(df.get_column("kept").to_numpy(), basket) if basket.size else np.zeros(0, bool)
    first = pl.Series(np.minimum.reduceat(ts, basket) if basket.size else np.zeros(0, np.int64)
                      ).cast(pl.Datetime("us"))
    end = dt.datetime.combine(as_of, dt.time())
    age = (pl.lit(end) - pl.col("t")).dt.total_seconds() / 86400.0
    w = (pl.DataFrame({"t": first}).select(
        ((pl.lit(0.5) ** (age.clip(lower_bound=0.0) / half_life_days)) * _UNITS).round(0).cast(pl.Int64))
         .to_series().to_numpy())
    w = np.where(kept_b, w, 0)
    crow_b, code_b = crow[basket], code[basket]
    item = _runs(crow_b, code_b)  # one (customer, item) each
    h_w = np.add.reduceat(w, item) if item.size else np.zeros(0, np.int64)
    off = np.zeros(customers.len() + 1, np.int64)
    np.add.at(off, crow_b[item] + 1, 1)
    return np.cumsum(off), code_b[item].astype(np.int64), h_w.astype(np.float64) / _UNITS
