"""Basket counting with the partitions on a cluster's workers (the Dask backend).

The same passes as :func:`centile.baskets.counting.count_groups`, through the session's
:meth:`~centile.backend.session.Session.map_reduce`: pass 1 runs one task per customer partition
that reads the partition's lines on its worker, builds its baskets, parks them in the run's
scratch folder (a file per partition, on the file system the workers share with the client) and
returns its item counts per group; the counts are added as a tree on the workers. Pass 2 (and 3)
counts the pairs (triples) of each parked partition among the items frequent in the merged counts
and adds them on the workers the same way. Only the merged integer counts reach the client; no
order line or basket leaves the workers, and the counts are those of one pass over every basket.

Recommendations go the same way (:func:`recommend_remote`): co-occurrence counts per partition merged on
the workers, the model fitted here, each partition's customers scored on its worker against it; the
top-k rows come back (through the scratch folder) and are put in customer order here. The time-split
evaluation (``--cutoff``) still runs here.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from centile.backend import local_sql
from centile.backend.partitions import Partitioning, PerCustomer
from centile.baskets.counting import (
    OVERALL,
    Counted,
    Tally,
    _add_items,
    _groups,
    _parked_groups,
    counted,
    plan,
    segment_columns,
)
from centile.baskets.lines import build_baskets, segment_codes
from centile.baskets.model import CoCounts, Model, Segments, histories
from centile.baskets.parts import Parked
from centile.baskets.recommend import (
    RecommendResult,
    _empty_recs,
    _kept,
    _merge,
    _no_history,
    _score,
)
from centile.baskets.settings import BasketSettings, RecommendSettings
from centile.kernels.pairs import merge_counts, pair_counts, triple_counts
from centile.runtime import Progress


def count_remote(source: Any, items: pl.Series, st: BasketSettings, segments: pl.DataFrame | None,
                 progress: Progress | None = None, scratch: Any = None) -> Counted:
    """:func:`~centile.baskets.counting.count_groups` over the partitions of ``source`` (a
    :class:`~centile.baskets.parts.SessionLines` whose session runs partitions on a cluster)."""
    present, notes = segment_columns(st, segments)
    s, parts = source.s, source.parts
    m = items.len()
    dictionary = items.to_frame("item")  # a frame: sent to each worker once
    seg = segments.select("customer_id", *present) if segments is not None and present else None
    with Parked(max(parts.count, 2), scratch) as parked:  # always a folder: the workers write into it
        folder = str(parked.dir)
        # segment codes come from the partition's own customers: it needs their rows only
        tallies = s.map_reduce(parts, "baskets: items", _items_of_partition, _add_tallies, source.read,
                               dictionary, st.max_basket_items, None if seg is None else PerCustomer(seg),
                               present, folder, progress=progress,
                               tables=("orders", "products"))
        order, thresholds, prune, least = plan(tallies, present, st, parts.count)
        # the support threshold applies to the merged counts on the worker holding them: only the
        # frequent pairs reach the client (all that the rules and pass 3 read)
        pairs = s.map_reduce(parts, "baskets: pairs", _pairs_of_partition, _add_pairs, folder, m,
                             {k: (prune[k], least[k]) for k in order}, progress=progress, tables=(),
                             finish=functools.partial(_frequent_pairs, {k: thresholds[k] for k in order}))
        for key, (keys, counts) in pairs.items():
            tallies[key].pair_keys, tallies[key].pair_counts = keys, counts
        if st.max_size >= 3:
            frequent = {k: (*tallies[k].pairs(thresholds[k])[:2], prune[k], least[k]) for k in order}
            triples = s.map_reduce(parts, "baskets: triples", _triples_of_partition, _add_triples, folder, m,
                                   frequent, progress=progress, tables=())
            for key, t in triples.items():
                tallies[key].triples = t
    return counted((tallies, order, thresholds), st, notes)


def _parked_path(folder: str, part: int) -> Path:
    return Path(folder) / f"{part}.pkl"


def _items_of_partition(view: Any, part: int, read: Any, dictionary: pl.DataFrame, max_basket_items: int,
                        segments: pl.DataFrame | None, present: tuple[str, ...], folder: str) -> dict:
    """Pass 1 on a worker: the partition's baskets parked in ``folder``, its item counts per group."""
    items = dictionary.get_column("item")
    m = items.len()
    lines = read(view)
    customers = lines.get_column("customer_id").unique().sort()
    b = build_baskets(lines, items, customers, max_basket_items)
    del lines
    seg_cols, _ = segment_codes(customers, segments, present)
    groups = _groups(b, seg_cols)
    tallies: dict[tuple[str, str], Tally] = {(OVERALL, OVERALL): Tally(m)}
    _add_items(tallies, b, seg_cols, groups, m)
    path = _parked_path(folder, part)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump((b.offsets, b.items.astype(np.int32 if m < 2**31 else np.int64), groups), f, protocol=5)
    os.replace(tmp, path)  # whole or absent: a retried task writes it again
    return tallies


def _add_tallies(a: dict, b: dict) -> dict:
    """Item counts of two sets of partitions, added per group."""
    for key, t in b.items():
        if key not in a:
            a[key] = t
            continue
        a[key].n += t.n
        a[key].excluded += t.excluded
        a[key].items += t.items
    return a


def _load(folder: str, part: int) -> Any:
    with open(_parked_path(folder, part), "rb") as f:
        return pickle.load(f)  # noqa: S301 - written by pass 1 of this run into its own scratch folder


def _pairs_of_partition(view: Any, part: int, folder: str, m: int, prune: dict) -> dict:
    """Pass 2 on a worker: the pair counts of one parked partition per group (sorted keys a*m+b)."""
    out = {}
    for key, b in _parked_groups(_load(folder, part)):
        counts, least = prune[key]
        a, bb, c = pair_counts(b.offsets, b.items, m, least, counts=counts)
        out[key] = (a * np.int64(m) + bb, c)
    return out


def _add_pairs(a: dict, b: dict) -> dict:
    for key, (keys, counts) in b.items():
        a[key] = merge_counts(*a[key], keys, counts) if key in a else (keys, counts)
    return a


def _frequent_pairs(thresholds: dict, merged: dict) -> dict:
    """The merged pair counts of each group held by at least its threshold's baskets (new arrays)."""
    out = {}
    for key, (keys, counts) in merged.items():
        keep = counts >= thresholds[key]
        out[key] = (keys[keep], counts[keep])
    return out


def _triples_of_partition(view: Any, part: int, folder: str, m: int, frequent: dict) -> dict:
    """Pass 3 on a worker: the triple counts of one parked partition per group."""
    out = {}
    for key, b in _parked_groups(_load(folder, part)):
        ma, mb, counts, least = frequent[key]
        ta, tb, tc, tn = triple_counts(b.offsets, b.items, m, least, ma, mb, counts=counts)
        out[key] = pl.DataFrame({"a": ta, "b": tb, "c": tc, "n": tn})
    return out


def _add_triples(a: dict, b: dict) -> dict:
    for key, t in b.items():
        a[key] = pl.concat([a[key], t]).group_by("a", "b", "c").agg(pl.col("n").sum()) if key in a else t
    return a


# ---------------------------------------------------------------------------
# recommendations

def recommend_remote(source: Any, items: pl.Series, st: RecommendSettings, as_of: dt.date,
                     segments: pl.DataFrame | None = None, *, progress: Progress | None = None,
                     scratch: Any = None) -> RecommendResult:
    """:func:`~centile.baskets.recommend.recommend_from` (without the evaluation) over the partitions
    of ``source`` on a cluster: pass 1 adds each partition's co-occurrence counts on its worker
    (merged as a tree) and parks its histories there; the model is fitted here from the merged
    counts; pass 2 scores each parked partition on a worker, including the customers of
    ``segments`` in that partition who have no line, and hands its rows back through the scratch
    folder. The rows are put in customer order here, as locally."""
    s, parts = source.s, source.parts
    dictionary = items.to_frame("item")
    seg = segments.select("customer_id", st.segment_by) if segments is not None and st.segment_by \
        and st.segment_by in segments.columns else None
    ids = segments.select("customer_id") if segments is not None else None
    # each partition gets its customers' segments only; the codes' dictionary is every customer's
    values = Segments.values_of(seg, st.segment_by) if seg is not None else None
    with Parked(max(parts.count, 2), scratch) as parked:
        folder = str(parked.dir)
        # min_pair_count applies to the merged co-counts on the worker holding them (the model
        # reads no pair below it)
        first = s.map_reduce(parts, "recommend: histories", _histories_of_partition, _add_cocounts, source.read,
                             dictionary, st, as_of, None if seg is None else PerCustomer(seg), values,
                             None if ids is None else PerCustomer(ids), parts, folder, progress=progress,
                             tables=("orders", "products"), finish=functools.partial(_co_pairs, st.min_pair_count))
        counts, notes, id_type = first
        model, pop = counts.model(st, items), counts.popularity()
        outs = s.map_partitions(parts, "recommend: scoring", _scores_of_partition, folder, model, pop, st,
                                progress=progress, tables=())
    rows = [(o.get_column("customer_id"), o.get_column("codes").to_numpy(), o.get_column("score").to_numpy(),
             o.get_column("source").to_numpy()) for o in outs]
    recs = _merge(rows, items) if rows else _empty_recs(items, id_type, st.k)
    return RecommendResult(recs, None, st.level, notes)


def _histories_of_partition(view: Any, part: int, read: Any, dictionary: pl.DataFrame, st: RecommendSettings,
                            as_of: dt.date, segments: pl.DataFrame | None, values: list[str] | None,
                            ids: pl.DataFrame | None, parts: Partitioning, folder: str
                            ) -> tuple[CoCounts, list[str], Any]:
    """Pass 1 on a worker: the partition's co-occurrence counts; its customers' histories (and the
    customers of ``ids`` in this partition without a line) parked in ``folder``. ``segments``: the
    partition's customers' segments (on a cluster; every customer's here), coded by ``values``."""
    items = dictionary.get_column("item")
    lines = read(view)
    id_type = lines.schema["customer_id"]
    notes: list[str] = []
    segs = Segments.of(segments, st.segment_by, id_type, notes, values)
    counts = CoCounts(items.len(), segs.count, st.min_pair_count if parts.count == 1 else 1)
    counts.add(_kept(lines), items, segs)
    customers = lines.get_column("customer_id").unique().sort()
    state = {"ids": customers, "hist": histories(lines, items, customers, as_of, st.half_life_days),
             "seg": segs.codes(customers)}
    del lines
    if ids is not None:  # the customers of the segments in this partition who bought nothing
        with local_sql({"__centile_ids": ids.select(pl.col("customer_id").cast(id_type)).unique()}, view.cfg) as con:
            mine = con.sql(f"SELECT customer_id FROM __centile_ids WHERE {parts.predicate(part)} "
                           "ORDER BY customer_id").pl().get_column("customer_id")
        idle = mine.to_frame().join(customers.to_frame(), on="customer_id", how="anti").get_column("customer_id")
        state.update(idle=idle, idle_seg=segs.codes(idle))
    path = _parked_path(folder, part)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=5)
    os.replace(tmp, path)
    return counts, notes, id_type


def _add_cocounts(a: tuple, b: tuple) -> tuple:
    """Co-occurrence counts of two sets of partitions, added."""
    x, y = a[0], b[0]
    x.n += y.n
    x.items += y.items
    x.segment_items += y.segment_items
    x.keys, x.pairs = merge_counts(x.keys, x.pairs, y.keys, y.pairs)
    return x, a[1], a[2]


def _co_pairs(least: int, merged: tuple) -> tuple:
    """The merged co-counts with the pairs held by fewer than ``least`` baskets dropped (a copy)."""
    import dataclasses

    counts = merged[0]
    keep = counts.pairs >= least
    return dataclasses.replace(counts, keys=counts.keys[keep], pairs=counts.pairs[keep]), merged[1], merged[2]


def _scores_of_partition(view: Any, part: int, folder: str, model: Model, pop: Any, st: RecommendSettings
                         ) -> pl.DataFrame:
    """Pass 2 on a worker: the top-k of the partition's customers (those without a line from their
    segment's popularity), as a frame with one row per customer."""
    state = _load(folder, part)
    out, score, src = _score(model, pop, state["hist"], state["seg"], st, st.new_only)
    ids = state["ids"]
    if "idle" in state:
        n = state["idle"].len()
        o2, s2, r2 = _score(model, pop, _no_history(n), state["idle_seg"], st, st.new_only)
        ids = pl.concat([ids, state["idle"]])
        out, score, src = np.vstack([out, o2]), np.vstack([score, s2]), np.vstack([src, r2])
    # (n, k) arrays as fixed-size list columns: the frame goes back through the scratch folder
    return pl.DataFrame({"customer_id": ids, "codes": pl.Series(out.astype(np.int32)), "score": pl.Series(score),
                         "source": pl.Series(src)})
