"""Itemset counts per segment, one customer partition at a time, merged by addition.

Pass 1 reads each partition's lines once, builds its baskets and adds their item counts and
basket numbers per group (overall, and each value of each segmentation column); the baskets are
parked (:class:`~centile.baskets.parts.Parked`). Then the thresholds follow from the merged
basket numbers. Pass 2 counts, per parked partition and group, every pair among the items
frequent in the merged counts and adds them into one sorted list per group
(:func:`centile.kernels.pairs.merge_counts`); pass 3 (``max_size = 3``) does the same for the
triples over the merged frequent pairs. No threshold applies inside a partition (a pair can be
rare in every partition and frequent overall), so the counts are those of one pass over every
basket, whatever the partitioning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from centile.backend.partitions import Partitioning
from centile.baskets.lines import (
    NO_SEGMENT,
    OVERALL,
    Baskets,
    build_baskets,
    segment_codes,
    subset,
)
from centile.baskets.parts import Parked
from centile.baskets.settings import BasketSettings
from centile.kernels.pairs import item_counts, merge_counts, pair_counts, triple_counts
from centile.runtime import Progress


@dataclass
class Tally:
    """Mergeable counts of one group: baskets, baskets left out, item counts, pair and triple counts."""

    n_items: int
    n: int = 0
    excluded: int = 0
    items: np.ndarray = field(default=None)  # type: ignore[assignment]
    pair_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # a * n_items + b, sorted
    pair_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    triples: pl.DataFrame | None = None  # a, b, c, n (summed)

    def __post_init__(self) -> None:
        if self.items is None:
            self.items = np.zeros(self.n_items, np.int64)

    def add_pairs(self, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> None:
        keys = a * np.int64(self.n_items) + b
        self.pair_keys, self.pair_counts = merge_counts(self.pair_keys, self.pair_counts, keys, c)

    def pairs(self, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The pairs (a < b, sorted) held by at least ``threshold`` baskets, and their counts."""
        keep = self.pair_counts >= threshold
        keys = self.pair_keys[keep]
        return keys // self.n_items, keys % self.n_items, self.pair_counts[keep]

    def add_triples(self, a: np.ndarray, b: np.ndarray, c: np.ndarray, n: np.ndarray) -> None:
        new = pl.DataFrame({"a": a, "b": b, "c": c, "n": n})
        if self.triples is not None:
            new = pl.concat([self.triples, new]).group_by("a", "b", "c").agg(pl.col("n").sum())
        self.triples = new


@dataclass
class Counted:
    """Every group's counts after the passes, in output order (overall first, then each column's
    values sorted), with the notes of the counting."""

    groups: list[tuple[str, str, Tally, int]]  # segment_by, segment, tally, threshold
    notes: list[str]


def _groups(b: Baskets, seg_cols: list) -> list[tuple[str, list[str], np.ndarray]]:
    """Per segmentation column: its values in this partition and each basket's value code."""
    return [(col, values, codes[b.customer].astype(np.int32)) for col, values, codes in seg_cols]


def _each_group(b: Baskets, groups: list[tuple[str, list[str], np.ndarray]]):
    """(key, baskets) of the overall group and of every segment value present."""
    yield (OVERALL, OVERALL), b
    for col, values, per_basket in groups:
        for i, val in enumerate(values):
            yield (col, val), subset(b, per_basket == i)


def _add_items(tallies: dict, b: Baskets, seg_cols: list, groups: list, m: int) -> None:
    """Add one partition's baskets, baskets left out and item counts per group (no subsets: one
    ``bincount`` per segmentation column over (value, item))."""
    sizes = np.diff(b.offsets)
    t = tallies[(OVERALL, OVERALL)]
    t.n += int(sizes.size)
    t.excluded += int(b.excluded.size)
    t.items += item_counts(b.offsets, b.items, m)
    for (col, values, codes), (_c, _v, per_basket) in zip(seg_cols, groups, strict=True):
        g = len(values)
        dropped = np.bincount(codes[b.excluded], minlength=g)
        baskets = np.bincount(per_basket, minlength=g)
        per_item = np.bincount(np.repeat(per_basket.astype(np.int64), sizes) * m + b.items,
                               minlength=g * m).reshape(g, m)
        for i, val in enumerate(values):
            t = tallies.setdefault((col, val), Tally(m))
            t.n += int(baskets[i])
            t.excluded += int(dropped[i])
            t.items += per_item[i]


def count_groups(source, items: pl.Series, st: BasketSettings, segments: pl.DataFrame | None,
                 progress: Progress | None = None, scratch=None) -> Counted:
    """Item, pair (and triple) counts per group over the partitions of ``source`` (see the module doc).

    ``source`` yields the basket lines (customer_id, order_id, item) of one partition at a time
    (:class:`~centile.baskets.parts.SessionLines` or :class:`~centile.baskets.parts.FrameLines`);
    ``scratch`` is the folder parked partitions go to when there are several.
    """
    m = items.len()
    present, notes = segment_columns(st, segments)
    tallies: dict[tuple[str, str], Tally] = {(OVERALL, OVERALL): Tally(m)}
    with Parked(source.count, scratch) as parked:
        for part, lines in enumerate(source.each("baskets: items")):
            customers = lines.get_column("customer_id").unique().sort()
            b = build_baskets(lines, items, customers, st.max_basket_items)
            del lines
            seg_cols, _ = segment_codes(customers, segments, present)
            groups = _groups(b, seg_cols)
            _add_items(tallies, b, seg_cols, groups, m)
            parked.put(part, (b.offsets, b.items.astype(np.int32 if m < 2**31 else np.int64), groups))
            del b, groups
        order, thresholds, prune, least = plan(tallies, present, st, source.count)
        passes = Partitioning(source.count)
        for part in passes.each("baskets: pairs", progress):
            for key, b in _parked_groups(parked.get(part)):
                a, bb, c = pair_counts(b.offsets, b.items, m, least[key], counts=prune[key])
                tallies[key].add_pairs(a, bb, c)
        if st.max_size >= 3:
            frequent = {key: tallies[key].pairs(thresholds[key])[:2] for key in order}
            for part in passes.each("baskets: triples", progress):
                for key, b in _parked_groups(parked.get(part)):
                    ma, mb = frequent[key]
                    tallies[key].add_triples(*triple_counts(b.offsets, b.items, m, least[key], ma, mb,
                                                            counts=prune[key]))
    return counted((tallies, order, thresholds), st, notes)


def segment_columns(st: BasketSettings, segments: pl.DataFrame | None) -> tuple[tuple[str, ...], list[str]]:
    """The segmentation columns of ``st`` present in ``segments``, and a note per absent one."""
    present = tuple(c for c in st.segment_by if segments is not None and c in segments.columns)
    return present, [f"baskets: no segment column {col!r} in this run; rules per {col} are skipped"
                     for col in st.segment_by if col not in present]


def plan(tallies: dict, present: tuple[str, ...], st: BasketSettings, count: int) -> tuple[list, dict, dict, dict]:
    """After the item counts: the groups in output order, their thresholds, and what prunes the pair
    counting of a partition (``prune`` per item, ``least`` the kernel's own threshold)."""
    order = [(OVERALL, OVERALL)] + [(c, v) for c in present
                                    for v in sorted(v for (cc, v) in tallies if cc == c)]
    thresholds = {key: st.threshold(tallies[key].n) for key in order}
    # one partition: its counts are the totals, so the threshold prunes inside the kernel; several:
    # every pair among the items frequent in the totals, thresholded after the merge
    whole = count == 1
    prune = {key: tallies[key].items if whole else (tallies[key].items >= thresholds[key]).astype(np.int64)
             for key in order}
    least = {key: thresholds[key] if whole else 1 for key in order}
    return order, thresholds, prune, least


def counted(done: tuple[dict, list, dict], st: BasketSettings, notes: list[str]) -> Counted:
    """The groups' counts in output order, with the note on baskets left out first."""
    tallies, order, thresholds = done
    excluded = tallies[(OVERALL, OVERALL)].excluded
    if excluded:
        notes.insert(0, f"baskets: {excluded} baskets with more than {st.max_basket_items} items were left out "
                        "(pair work grows with the square of the basket size; raise [baskets] max_basket_items)")
    return Counted([(k[0], k[1], tallies[k], thresholds[k]) for k in order], notes)


def _parked_groups(state):
    offsets, items, groups = state
    b = Baskets(offsets, np.ascontiguousarray(items, dtype=np.int64), np.zeros(offsets.size - 1, np.int64),
                np.zeros(0, np.int64))
    yield from _each_group(b, groups)


__all__ = ["NO_SEGMENT", "Counted", "Tally", "count_groups"]
