"""Association rules per segment from exact item and pair counts (pure: frames in, frames out).

A basket is one order of one customer (``(customer_id, order_id)``; without
order ids the orders view uses the order day); an item counts once per basket.
Counting goes "partition → integer counts → merge by addition": item counts
first, then pair counts among the items frequent in the merged counts, then
the integer threshold. Every metric is derived from the integer counts at the
end, so any partitioning and any thread count give the same bytes.

Metrics of a rule A → C (``N`` baskets in the segment):

- support = c(A∪C) / N, confidence = c(A∪C) / c(A), lift = N·c(A∪C) / (c(A)·c(C)),
- leverage = c(A∪C)/N − c(A)·c(C)/N² (computed as (N·c(A∪C) − c(A)·c(C)) / N²),
- conviction = (1 − support(C)) / (1 − confidence) = c(A)·(N − c(C)) / (N·(c(A) − c(A∪C))),
  ``+inf`` when confidence = 1 (c(A∪C) = c(A)).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from centile.baskets.counting import count_groups
from centile.baskets.lines import (
    NO_SEGMENT,
    OVERALL,
    Baskets,
    basket_lines,
    build_baskets,
    item_dictionary,
    segment_codes,
    subset,
)
from centile.baskets.parts import FrameLines
from centile.baskets.settings import BasketSettings
from centile.errors import InputError
from centile.kernels.pairs import item_counts, pair_counts, triple_counts
from centile.runtime import Progress

log = logging.getLogger(__name__)

#: re-exported from :mod:`centile.baskets.lines` (their home before the partitioned counting)
__all__ = ["NO_SEGMENT", "OVERALL", "Baskets", "BasketsResult", "Counts", "basket_lines", "baskets_from",
           "baskets_summary_doc", "build_baskets", "compute_baskets", "count_itemsets", "item_dictionary",
           "rules_from_counts", "segment_codes", "sort_rules", "subset", "write_baskets"]


@dataclass
class BasketsResult:
    """Itemsets, rules and the summary per segment. With ``baskets_from(..., sink=...)`` the itemsets
    and rules went to Parquet a segment at a time and are None here (``rows`` has their row counts)."""

    itemsets: pl.DataFrame | None
    rules: pl.DataFrame | None
    summary: pl.DataFrame
    level: str
    notes: list[str] = field(default_factory=list)
    out: object = None
    rows: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# counts: per partition, merged by addition

@dataclass(frozen=True)
class Counts:
    """Mergeable counts of one set of baskets: N, item counts, pair counts (a < b) and, with
    ``max_size = 3``, triple counts (``t`` = columns a, b, c, count with a < b < c)."""

    n: int
    items: np.ndarray
    a: np.ndarray
    b: np.ndarray
    ab: np.ndarray
    t: tuple[np.ndarray, ...] | None = None


def count_itemsets(b: Baskets, n_items: int, threshold: int, partitions: int = 1, max_size: int = 2) -> Counts:
    """Exact counts of the items, pairs (and triples) held by at least ``threshold`` baskets.

    With ``partitions > 1`` the baskets are split by customer (row modulo
    ``partitions``), item counts are summed over the parts, pairs among the
    items frequent in the sum are counted per part and summed, the threshold
    applies to the sums, and triples extend the merged frequent pairs the same
    way: the same result as one part. (A per-part threshold would be wrong: a
    pair can be rare in every part and frequent overall.)
    """
    if partitions <= 1:
        ic = item_counts(b.offsets, b.items, n_items)
        pa, pb, pc = pair_counts(b.offsets, b.items, n_items, threshold, counts=ic)
        t = triple_counts(b.offsets, b.items, n_items, threshold, pa, pb, counts=ic) if max_size >= 3 else None
        return Counts(int(b.offsets.size - 1), ic, pa, pb, pc, t)
    parts = [subset(b, b.customer % partitions == p) for p in range(partitions)]
    ic = np.zeros(n_items, np.int64)
    for p in parts:  # pass 1: item counts merge by addition
        ic += item_counts(p.offsets, p.items, n_items)
    freq = (ic >= threshold).astype(np.int64)
    frames = []
    for p in parts:  # pass 2: every pair among the globally frequent items, then add
        pa, pb, pc = pair_counts(p.offsets, p.items, n_items, 1, counts=freq)
        frames.append(pl.DataFrame({"a": pa, "b": pb, "ab": pc}))
    merged = (pl.concat(frames).group_by("a", "b").agg(pl.col("ab").sum())
              .filter(pl.col("ab") >= threshold).sort("a", "b"))
    ma, mb = merged["a"].to_numpy(), merged["b"].to_numpy()
    t = None
    if max_size >= 3:  # pass 3: triples over the merged frequent pairs, then add
        frames = []
        for p in parts:
            ta, tb, tc, tn = triple_counts(p.offsets, p.items, n_items, 1, ma, mb, counts=freq)
            frames.append(pl.DataFrame({"a": ta, "b": tb, "c": tc, "n": tn}))
        tri = (pl.concat(frames).group_by("a", "b", "c").agg(pl.col("n").sum())
               .filter(pl.col("n") >= threshold).sort("a", "b", "c"))
        t = tuple(tri[c].to_numpy() for c in ("a", "b", "c", "n"))
    return Counts(sum(int(p.offsets.size - 1) for p in parts), ic, ma, mb, merged["ab"].to_numpy(), t)


# ---------------------------------------------------------------------------
# metrics from counts

_RULE_KEYS = ("segment_by", "segment")


def _split(df: pl.DataFrame, ant: tuple[str, str | None], cons: tuple[str, str | None], count_ant: str,
           count_cons: str, count_both: str) -> pl.DataFrame:
    def item(c: str | None) -> pl.Expr:
        return pl.col(c) if c else pl.lit(None, pl.Int64)
    return df.select(*_RULE_KEYS, item(ant[0]).alias("antecedent"), item(ant[1]).alias("antecedent_2"),
                     item(cons[0]).alias("consequent"), item(cons[1]).alias("consequent_2"),
                     pl.col(count_ant).alias("count_antecedent"), pl.col(count_cons).alias("count_consequent"),
                     pl.col(count_both).alias("count_both"), "n_baskets")


def rules_from_counts(pairs: pl.DataFrame, triples: pl.DataFrame | None = None,
                      all_splits: bool = False) -> pl.DataFrame:
    """Rules with every metric derived from the integer counts.

    ``pairs``: segment_by, segment, a, b, count_a, count_b, count_ab, n_baskets → A → C both ways.
    ``triples`` (optional): segment_by, segment, a, b, c, count_abc, count_a, count_b, count_c,
    count_ab, count_ac, count_bc, n_baskets → the three rules with one consequent ({b, c} → a, ...)
    and, with ``all_splits``, also the three with one antecedent (a → {b, c}, ...). A rule's second
    antecedent / consequent item is in ``antecedent_2`` / ``consequent_2`` (null when it has one).
    """
    parts = [_split(pairs, ("a", None), ("b", None), "count_a", "count_b", "count_ab"),
             _split(pairs, ("b", None), ("a", None), "count_b", "count_a", "count_ab")]
    if triples is not None and triples.height:
        t = triples
        parts += [_split(t, ("b", "c"), ("a", None), "count_bc", "count_a", "count_abc"),
                  _split(t, ("a", "c"), ("b", None), "count_ac", "count_b", "count_abc"),
                  _split(t, ("a", "b"), ("c", None), "count_ab", "count_c", "count_abc")]
        if all_splits:
            parts += [_split(t, ("a", None), ("b", "c"), "count_a", "count_bc", "count_abc"),
                      _split(t, ("b", None), ("a", "c"), "count_b", "count_ac", "count_abc"),
                      _split(t, ("c", None), ("a", "b"), "count_c", "count_ab", "count_abc")]
    r = pl.concat(parts)
    n = pl.col("n_baskets").cast(pl.Float64)
    ca = pl.col("count_antecedent")
    cc = pl.col("count_consequent")
    cab = pl.col("count_both")
    return r.with_columns(
        support=cab.cast(pl.Float64) / n,
        confidence=cab.cast(pl.Float64) / ca.cast(pl.Float64),
        lift=(pl.col("n_baskets") * cab).cast(pl.Float64) / (ca * cc).cast(pl.Float64),
        leverage=(pl.col("n_baskets") * cab - ca * cc).cast(pl.Float64) / (n * n),
        conviction=pl.when(cab == ca).then(float("inf")).otherwise(
            (ca * (pl.col("n_baskets") - cc)).cast(pl.Float64) / (n * (ca - cab).cast(pl.Float64))),
    )


def sort_rules(rules: pl.DataFrame) -> pl.DataFrame:
    """Segment, then lift (rounded to 9 decimals) and support descending, then antecedent, consequent
    (a single item before a pair starting with it)."""
    return (rules.with_columns(pl.col("lift").round(9).alias("__lift"))
            .sort("segment_by", "segment", "__lift", "count_both", "antecedent", "antecedent_2", "consequent",
                  "consequent_2", descending=[False, False, True, True, False, False, False, False],
                  nulls_last=False)
            .drop("__lift"))



def compute_baskets(lines: pl.DataFrame, st: BasketSettings, segments: pl.DataFrame | None = None,
                    partitions: int = 1) -> BasketsResult:
    """Itemsets (size 1 and 2, 3 with ``max_size = 3``) and rules overall and per segment from basket lines.

    Parameters
    ----------
    lines : DataFrame
        customer_id, order_id, item (see :func:`basket_lines`).
    st : BasketSettings
        Thresholds, segmentation columns, ``max_basket_items``.
    segments : DataFrame, optional
        customer_id plus the segmentation columns (e.g. ``club``, ``rfm_segment``).
    partitions : int
        Count in that many customer partitions and merge (same result; see
        :mod:`centile.baskets.counting`).
    """
    for c in ("customer_id", "order_id", "item"):
        if c not in lines.columns:
            raise InputError(f"basket lines: missing column {c!r}")
    return baskets_from(FrameLines(lines, partitions), item_dictionary(lines), st, segments)


def baskets_from(source, items: pl.Series, st: BasketSettings, segments: pl.DataFrame | None = None,
                 progress: Progress | None = None, scratch=None, sink=None) -> BasketsResult:
    """Itemsets and rules from the lines ``source`` yields one customer partition at a time
    (:mod:`centile.baskets.parts`); ``items`` is the sorted item dictionary.

    The itemsets and rules are built one segment at a time, in output order (segment_by, segment).
    With ``sink`` (an output folder: ``sink.path(name)``) each segment's rows are appended to
    ``basket_itemsets.parquet`` and ``basket_rules.parquet`` and dropped, so only the largest
    segment's rules are held at once (the rules of every segment together took about 0.6 GB per
    million customers, and a few times that while sorted and decoded); without it they are
    concatenated into the result.
    """
    if getattr(source, "remote", False):  # the partitions run on the session's cluster
        from centile.baskets.remote import count_remote

        counted = count_remote(source, items, st, segments, progress, scratch)
    else:
        counted = count_groups(source, items, st, segments, progress, scratch)
    rows: dict[tuple[str, str], dict] = {}
    kept: dict[str, list[pl.DataFrame]] = {"basket_itemsets": [], "basket_rules": []}
    with _Writer(sink, "basket_itemsets") as w_sets, _Writer(sink, "basket_rules") as w_rules:
        for seg_by, seg, t, thr in sorted(counted.groups, key=lambda g: (g[0], g[1])):
            n = t.n
            freq = np.flatnonzero(t.items >= thr)
            pa, pb, pc = t.pairs(thr)
            c = Counts(n, t.items, pa, pb, pc, _triples(t, thr) if st.max_size >= 3 else None)
            ones = pl.DataFrame({
                "segment_by": [seg_by] * freq.size, "segment": [seg] * freq.size,
                "a": freq.astype(np.int64), "count": c.items[freq], "n_baskets": np.full(freq.size, n, np.int64)})
            pairs = pl.DataFrame({
                "segment_by": [seg_by] * c.a.size, "segment": [seg] * c.a.size, "a": c.a, "b": c.b,
                "count_a": c.items[c.a], "count_b": c.items[c.b], "count_ab": c.ab,
                "n_baskets": np.full(c.a.size, n, np.int64)})
            triples = _triples_frame(seg_by, seg, c, n) if st.max_size >= 3 else None
            itemsets, rules = _segment_frames(items, ones, pairs, triples, st)
            del ones, pairs, triples
            rows[(seg_by, seg)] = {
                "segment_by": seg_by, "segment": seg, "n_baskets": n, "baskets_excluded": t.excluded,
                "threshold": thr, "frequent_items": int(freq.size), "frequent_pairs": int(c.a.size),
                "frequent_triples": int(c.t[0].size) if c.t is not None else 0, "rules": rules.height}
            for name, frame, writer in (("basket_itemsets", itemsets, w_sets), ("basket_rules", rules, w_rules)):
                if writer.on:
                    writer.write(frame)
                else:
                    kept[name].append(frame)
            del itemsets, rules
    # the summary keeps the counting order: overall first, then each segmentation's values
    summ = pl.DataFrame([rows[(g[0], g[1])] for g in counted.groups], schema=_SUMMARY)
    if sink is not None:
        return BasketsResult(None, None, summ, st.level, counted.notes,
                             rows={"basket_itemsets": w_sets.rows, "basket_rules": w_rules.rows})
    return BasketsResult(pl.concat(kept["basket_itemsets"]), pl.concat(kept["basket_rules"]), summ, st.level,
                         counted.notes)


_SUMMARY = {"segment_by": pl.String, "segment": pl.String, "n_baskets": pl.Int64, "baskets_excluded": pl.Int64,
            "threshold": pl.Int64, "frequent_items": pl.Int64, "frequent_pairs": pl.Int64,
            "frequent_triples": pl.Int64, "rules": pl.Int64}


class _Writer:
    """Appends frames of one schema to ``sink.path(f"{name}.parquet")`` (zstd); off without a sink."""

    def __init__(self, sink, name: str) -> None:
        self.path = sink.path(f"{name}.parquet") if sink is not None else None
        self.on = self.path is not None
        self.pq = None
        self.rows = 0

    def write(self, df: pl.DataFrame) -> None:
        import pyarrow.parquet as pq

        table = df.to_arrow()
        if self.pq is None:
            self.pq = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self.pq.write_table(table)
        self.rows += df.height

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pq is not None:
            self.pq.close()


def _triples(t, threshold: int) -> tuple[np.ndarray, ...]:
    if t.triples is None:
        return (np.zeros(0, np.int64),) * 4
    tri = t.triples.filter(pl.col("n") >= threshold).sort("a", "b", "c")
    return tuple(tri[c].to_numpy() for c in ("a", "b", "c", "n"))


def _decode(df: pl.DataFrame, items: pl.Series, cols: tuple[str, ...]) -> pl.DataFrame:
    lookup = items.to_frame("item")
    for c in cols:
        df = df.with_columns(pl.col(c).map_batches(
            lambda s: lookup.get_column("item").gather(s), return_dtype=items.dtype))
    return df


def _triples_frame(seg_by: str, seg: str, c: Counts, n: int) -> pl.DataFrame:
    ta, tb, tc, tn = c.t if c.t is not None else (np.zeros(0, np.int64),) * 4
    pairs = pl.DataFrame({"a": c.a, "b": c.b, "ab": c.ab})
    t = pl.DataFrame({"segment_by": [seg_by] * ta.size, "segment": [seg] * ta.size, "a": ta, "b": tb, "c": tc,
                      "count_abc": tn, "count_a": c.items[ta], "count_b": c.items[tb], "count_c": c.items[tc],
                      "n_baskets": np.full(ta.size, n, np.int64)}, schema_overrides={
                          "segment_by": pl.String, "segment": pl.String})
    for x, y, name in (("a", "b", "count_ab"), ("a", "c", "count_ac"), ("b", "c", "count_bc")):
        look = pairs.rename({"a": x, "b": y, "ab": name})
        t = t.join(look, on=[x, y], how="left", maintain_order="left")
    return t


def _segment_frames(items: pl.Series, ones: pl.DataFrame, pairs: pl.DataFrame, triples: pl.DataFrame | None,
                    st: BasketSettings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The itemsets and the rules of one segment, sorted and decoded."""
    schema_i = {"segment_by": pl.String, "segment": pl.String, "a": pl.Int64, "count": pl.Int64,
                "n_baskets": pl.Int64}
    ones = ones.cast(schema_i)
    schema_p = {"segment_by": pl.String, "segment": pl.String, "a": pl.Int64, "b": pl.Int64, "count_a": pl.Int64,
                "count_b": pl.Int64, "count_ab": pl.Int64, "n_baskets": pl.Int64}
    pairs = pairs.cast(schema_p)
    rules = rules_from_counts(pairs, triples, st.all_splits)
    if st.min_confidence > 0:  # exact: count_both * den >= num * count_antecedent
        num, den = st.min_confidence.numerator, st.min_confidence.denominator
        rules = rules.filter(pl.col("count_both") * den >= pl.col("count_antecedent") * num)
    rules = sort_rules(rules)
    none = pl.lit(None, pl.Int64)
    sets = [ones.select("segment_by", "segment", pl.lit(1, pl.Int8).alias("size"), pl.col("a").alias("item_1"),
                        none.alias("item_2"), none.alias("item_3"), "count", "n_baskets"),
            pairs.select("segment_by", "segment", pl.lit(2, pl.Int8).alias("size"), pl.col("a").alias("item_1"),
                         pl.col("b").alias("item_2"), none.alias("item_3"), pl.col("count_ab").alias("count"),
                         "n_baskets")]
    if triples is not None:
        sets.append(triples.select("segment_by", "segment", pl.lit(3, pl.Int8).alias("size"),
                                   pl.col("a").alias("item_1"), pl.col("b").alias("item_2"),
                                   pl.col("c").alias("item_3"), pl.col("count_abc").alias("count"), "n_baskets"))
    itemsets = pl.concat(sets).with_columns(
        support=pl.col("count").cast(pl.Float64) / pl.col("n_baskets").cast(pl.Float64))
    itemsets = itemsets.sort("segment_by", "segment", "size", "count", "item_1", "item_2", "item_3",
                             descending=[False, False, False, True, False, False, False], nulls_last=True)
    itemsets = _decode(itemsets, items, ("item_1", "item_2", "item_3"))
    rules = _decode(rules, items, ("antecedent", "antecedent_2", "consequent", "consequent_2"))
    return itemsets, rules


def write_baskets(res: BasketsResult, staging) -> dict[str, int]:
    """basket_itemsets, basket_rules (unless ``baskets_from`` wrote them already), basket_summary
    (Parquet, zstd)."""
    out = dict(res.rows)
    for name, df in (("basket_itemsets", res.itemsets), ("basket_rules", res.rules),
                     ("basket_summary", res.summary)):
        if df is not None:
            df.write_parquet(staging.path(f"{name}.parquet"), compression="zstd")
            out[name] = df.height
    return out


def baskets_summary_doc(res: BasketsResult) -> dict:
    overall = res.summary.filter(pl.col("segment_by") == OVERALL)
    row = overall.row(0, named=True) if overall.height else {}
    return {"level": res.level, "baskets": row.get("n_baskets", 0), "threshold": row.get("threshold"),
            "baskets_excluded": row.get("baskets_excluded", 0), "rules_overall": row.get("rules", 0),
            "segments": res.summary.height - 1, "rules_total": int(res.summary["rules"].sum()), "notes": res.notes}
