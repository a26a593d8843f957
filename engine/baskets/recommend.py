"""Per-customer recommendations from item co-occurrence, and their time-split evaluation.

Fit: baskets → exact item and pair counts (:mod:`centile.kernels.pairs`) → item-item
scores (cosine c(ij)/√(c(i)c(j)) or lift N·c(ij)/(c(i)c(j))) for pairs held by at least
``min_pair_count`` baskets, the best ``max_neighbors`` per item (:mod:`centile.baskets.model`).
A customer's history weights each bought item by the recency-decayed number of baskets
holding it (``Σ 0.5^(age_days / half_life_days)``, summed in integer units of 1e-9 so the
sum does not depend on the order threads add it in). Scoring and top-k selection run in
:func:`centile.kernels.recommend.recommend`; customers without history, or with fewer
than ``k`` scored candidates, are filled from the popularity within their segment.

Customers are processed one partition at a time (:mod:`centile.baskets.parts`). Pass 1
reads a partition's lines once: it adds the partition's counts into the model's counts
(integers, merged by addition) and parks the partition's histories. The model is fitted
from the merged counts. Pass 2 scores each parked partition against it. The rows of every
partition are put in customer order at the end, so ``recommendations.parquet`` is the same
for any partition count and thread count.

Evaluation (``cutoff``): fit on the baskets before the cutoff, score on the items
bought from the cutoff on. Users scored: at least one basket before and at least one
relevant item after ("new items only": items not bought before; "all items": any).
HitRate@k = share of users with at least one hit, Precision@k = mean hits / k,
Recall@k = mean hits / relevant items, for centile and for the popularity baseline. Each
partition adds the number of its users per (hits, relevant items); the metrics are exact
fractions of those integer counts, rounded once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import polars as pl

from centile.backend.partitions import Partitioning
from centile.baskets.lines import basket_lines
from centile.baskets.model import CoCounts, Model, Segments, histories, popularity_order
from centile.baskets.parts import FrameLines, Parked
from centile.baskets.settings import RecommendSettings
from centile.errors import ConfigError
from centile.kernels.recommend import recommend
from centile.runtime import Progress

PROTOCOLS = (("new items only", True), ("all items", False))
MODELS = ("centile", "popularity")


#: customers per slice when the recommendations become rows (one Parquet row group each)
SLICE_CUSTOMERS = 1 << 18


@dataclass(frozen=True)
class Recommendations:
    """The top-k lists in compact form: ``customers`` in order, their ``(n, k)`` item codes into
    ``items`` (-1: no item), scores and sources. Rows are made a slice of customers at a time, so
    the long table (about 400 MB per million customers at k = 10) is never whole in memory when
    written."""

    customers: pl.Series
    items: pl.Series
    codes: np.ndarray
    score: np.ndarray
    source: np.ndarray

    @property
    def height(self) -> int:
        """Rows of the long table."""
        return int(np.count_nonzero(self.codes >= 0))

    @property
    def customers_with_rows(self) -> int:
        return int(np.count_nonzero((self.codes >= 0).any(axis=1))) if self.codes.size else 0

    def frame(self, lo: int = 0, hi: int | None = None) -> pl.DataFrame:
        """The long table of customers ``lo:hi`` (all by default)."""
        return to_frame(self.customers.slice(lo, (hi if hi is not None else self.customers.len()) - lo),
                        self.items, self.codes[lo:hi], self.score[lo:hi], self.source[lo:hi])

    def write(self, path) -> int:
        """Write the long table to Parquet (zstd) a slice of :data:`SLICE_CUSTOMERS` customers at
        a time, one row group each: the bytes depend on the rows only. Returns the row count."""
        import pyarrow.parquet as pq

        n = self.customers.len()
        first = self.frame(0, min(n, SLICE_CUSTOMERS)).to_arrow()
        with pq.ParquetWriter(path, first.schema, compression="zstd") as writer:
            writer.write_table(first, row_group_size=max(first.num_rows, 1))
            for lo in range(SLICE_CUSTOMERS, n, SLICE_CUSTOMERS):
                t = self.frame(lo, min(n, lo + SLICE_CUSTOMERS)).to_arrow().cast(first.schema)
                writer.write_table(t, row_group_size=max(t.num_rows, 1))
        return self.height


@dataclass
class RecommendResult:
    recs: Recommendations
    evaluation: pl.DataFrame | None
    level: str
    notes: list[str] = field(default_factory=list)
    out: object = None

    @property
    def recommendations(self) -> pl.DataFrame:
        """The long table: customer_id, rank, item, score, source (made on each call)."""
        return self.recs.frame()


def recommend_lines(s, level: str, exclude_returned: bool = True) -> pl.DataFrame:
    """The lines of :func:`~centile.baskets.lines.basket_lines` including the returned-in-full ones:
    those make an item bought (never recommended again under new-only) but, with
    ``exclude_returned``, neither count in co-occurrence nor weigh in a history."""
    lines = basket_lines(s, level, exclude_returned=False)
    return lines if exclude_returned else lines.with_columns(kept=pl.lit(True))


def _kept(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.filter(pl.col("kept")) if "kept" in lines.columns else lines


def _no_history(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros(n + 1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)


def _score(model: Model, pop: tuple[np.ndarray, np.ndarray], hist: tuple, seg: np.ndarray, st: RecommendSettings,
           new_only: bool, neighbours: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = model.items.len()
    if neighbours:
        n_off, n_items, n_score = model.n_off, model.n_items, model.n_score
    else:
        n_off, n_items, n_score = np.zeros(m + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    h_off, h_items, h_w = hist
    return recommend(h_off, h_items, h_w, n_off, n_items, n_score, m, st.k, new_only=new_only,
                     boost=st.repurchase_boost, segment=seg, pop_order=pop[0], pop_len=pop[1])


def to_frame(customers: pl.Series, items: pl.Series, out: np.ndarray, score: np.ndarray,
             source: np.ndarray) -> pl.DataFrame:
    """Long table: customer_id, rank (1..k), item, score, source (co-occurrence / popularity)."""
    nc, k = out.shape
    flat = out.reshape(-1)
    keep = flat >= 0
    rows = np.repeat(np.arange(nc), k)[keep]
    src = pl.Series("source", source.reshape(-1)[keep]) == 0
    return pl.DataFrame({
        "customer_id": customers.gather(rows),
        "rank": (np.tile(np.arange(1, k + 1, dtype=np.int16), nc)[keep]),
        "item": items.gather(flat[keep]),
        "score": score.reshape(-1)[keep],
    }).with_columns(pl.when(src).then(pl.lit("co-occurrence")).otherwise(pl.lit("popularity"))
                    .cast(pl.String).alias("source")).rechunk()


# ---------------------------------------------------------------------------
# evaluation metrics from (hits, relevant) counts

def _metrics(hist: Counter, k: int) -> dict[str, float | int]:
    """HitRate, Precision, Recall at k from the number of users per (hits, relevant items)."""
    n = sum(hist.values())
    if n == 0:
        return {"users": 0, "hit_rate": float("nan"), "precision": float("nan"), "recall": float("nan")}
    hit_users = sum(c for (h, _r), c in hist.items() if h > 0)
    hits = sum(h * c for (h, _r), c in hist.items())
    recall = sum((Fraction(h * c, r) for (h, r), c in sorted(hist.items())), Fraction(0))
    return {"users": n, "hit_rate": hit_users / n, "precision": hits / (n * k), "recall": float(recall / n)}


def _hits(out: np.ndarray, rel_keys: np.ndarray, n_users: int, m: int) -> Counter:
    """Users per (hits, relevant) of top-k codes ``out`` (users × k) against sorted relevant keys
    ``user * m + code``; users without a relevant item are left out."""
    k = out.shape[1]
    rows = np.repeat(np.arange(n_users, dtype=np.int64), k)
    flat = out.reshape(-1).astype(np.int64)
    ok = flat >= 0
    rec = rows[ok] * m + flat[ok]
    h = np.bincount(rows[ok][np.isin(rec, rel_keys)], minlength=n_users)
    r = np.bincount(rel_keys // m, minlength=n_users)
    has = r > 0
    pairs, counts = np.unique(np.stack([h[has], r[has]], axis=1), axis=0, return_counts=True)
    return Counter({(int(a), int(b)): int(c) for (a, b), c in zip(pairs, counts, strict=True)})


def topn_metrics(recs: pl.DataFrame, relevant: pl.DataFrame, k: int) -> dict[str, float | int]:
    """HitRate@k, Precision@k, Recall@k over the users of ``relevant`` (customer_id, item).

    Hits and relevant items are integers per user; the metrics are exact fractions of their
    counts, rounded once (the same whatever order the users come in).
    """
    rel = relevant.unique()
    per_user = rel.group_by("customer_id").agg(pl.len().alias("relevant"))
    hits = (recs.filter(pl.col("rank") <= k).select("customer_id", "item").join(rel, on=["customer_id", "item"])
            .group_by("customer_id").agg(pl.len().alias("hits")))
    t = per_user.join(hits, on="customer_id", how="left").with_columns(pl.col("hits").fill_null(0))
    hist = Counter({(int(h), int(r)): int(c) for h, r, c in
                    t.group_by("hits", "relevant").agg(pl.len()).iter_rows()})
    return _metrics(hist, k)


# ---------------------------------------------------------------------------
# the partitioned flow

@dataclass
class _Span:
    """Lines before and after the cutoff, and the orders' first and last timestamps (for the error)."""

    before: int = 0
    after: int = 0
    lo: dt.datetime | None = None
    hi: dt.datetime | None = None

    def add(self, lines: pl.DataFrame, start: dt.datetime) -> None:
        if lines.height == 0:
            return
        ts = lines.get_column("order_ts")
        n_before = int((ts < start).sum())
        self.before += n_before
        self.after += lines.height - n_before
        lo, hi = ts.min(), ts.max()
        self.lo = lo if self.lo is None else min(self.lo, lo)
        self.hi = hi if self.hi is None else max(self.hi, hi)


def _codes(df: pl.DataFrame, users: pl.Series, items: pl.Series) -> np.ndarray:
    """Sorted keys ``user row * m + item code`` of (customer_id, item) rows."""
    m = items.len()
    u = pl.DataFrame({"customer_id": users, "u": np.arange(users.len(), dtype=np.int64)})
    c = pl.DataFrame({"item": items, "c": np.arange(m, dtype=np.int64)})
    keys = df.join(u, on="customer_id").join(c, on="item").select(pl.col("u") * m + pl.col("c"))
    return np.sort(keys.to_series().to_numpy())


def _eval_state(lines: pl.DataFrame, items: pl.Series, st: RecommendSettings, start: dt.datetime,
                cutoff: dt.date, segs: Segments) -> dict:
    """One partition's users (a line before the cutoff), their histories before it, and their
    relevant items from it on per protocol."""
    train = lines.filter(pl.col("order_ts") < start)
    test = lines.filter(pl.col("order_ts") >= start)
    users = train.get_column("customer_id").unique().sort()
    bought = train.select("customer_id", "item").unique()
    after = (_kept(test).filter(pl.col("customer_id").is_in(users.implode()))
             .select("customer_id", "item").unique())
    relevant = {"all items": _codes(after, users, items),
                "new items only": _codes(after.join(bought, on=["customer_id", "item"], how="anti"), users, items)}
    return {"users": users.len(), "hist": histories(train, items, users, cutoff, st.half_life_days),
            "seg": segs.codes(users), "relevant": relevant}


def recommend_from(source, items: pl.Series, st: RecommendSettings, as_of: dt.date,
                   segments: pl.DataFrame | None = None, *, cutoff: dt.date | None = None,
                   recommendations: bool = True, progress: Progress | None = None,
                   scratch=None) -> RecommendResult:
    """Recommendations (fit on every basket before ``as_of``) and, with ``cutoff``, the evaluation,
    from the lines ``source`` yields one customer partition at a time (see the module doc)."""
    notes: list[str] = []
    id_type = None
    m = items.len()
    segs: Segments | None = None
    main = ev = None
    start = dt.datetime.combine(cutoff, dt.time()) if cutoff is not None else None
    span = _Span()
    line_ids: list[pl.Series] = []
    with Parked(source.count, scratch) as parked:
        for part, lines in enumerate(source.each("recommend: histories")):
            if segs is None:
                id_type = lines.schema["customer_id"]
                segs = Segments.of(segments, st.segment_by, id_type, notes)
                least = st.min_pair_count if source.count == 1 else 1
                main, ev = CoCounts(m, segs.count, least), CoCounts(m, segs.count, least)
            state: dict = {}
            if recommendations:
                main.add(_kept(lines), items, segs)
                ids = lines.get_column("customer_id").unique().sort()
                line_ids.append(ids)
                state.update(ids=ids, hist=histories(lines, items, ids, as_of, st.half_life_days),
                             seg=segs.codes(ids))
            if start is not None:
                span.add(lines, start)
                train = lines.filter(pl.col("order_ts") < start)
                ev.add(_kept(train), items, segs)
                del train
                state["eval"] = _eval_state(lines, items, st, start, cutoff, segs)
            del lines
            parked.put(part, state)
        if segs is None:  # a source without partitions cannot happen; keep the types honest
            raise ValueError("no partitions")
        if start is not None and (span.before == 0 or span.after == 0):
            raise ConfigError(f"--cutoff {cutoff}: needs orders before and after it; the orders run from "
                              f"{span.lo} to {span.hi}")
        passes = Partitioning(source.count)
        recs = None
        if recommendations:
            model, pop = main.model(st, items), main.popularity()
            outs = []
            for part in passes.each("recommend: scoring", progress):
                state = parked.get(part)
                out, score, src = _score(model, pop, state["hist"], state["seg"], st, st.new_only)
                outs.append((state["ids"], out.astype(np.int32), score, src))
            outs.append(_without_lines(model, pop, segs, segments, line_ids, id_type, st))
            recs = _merge(outs, items)
        evaluation = None
        if start is not None:
            evaluation = _evaluate(parked, passes, ev.model(st, items), ev, st, cutoff, notes, progress)
    return RecommendResult(recs if recs is not None else _empty_recs(items, id_type, st.k), evaluation, st.level,
                           notes)


def _without_lines(model: Model, pop, segs: Segments, segments: pl.DataFrame | None, line_ids: list[pl.Series],
                   id_type, st: RecommendSettings) -> tuple:
    """Customers of ``segments`` without a line: their segment's popular items."""
    if segments is None:
        ids = pl.Series("customer_id", [], dtype=id_type)
    else:
        ids = (segments.get_column("customer_id").cast(id_type).unique().sort()
               .to_frame().join(pl.concat(line_ids).to_frame(), on="customer_id", how="anti")
               .get_column("customer_id"))
    out, score, src = _score(model, pop, _no_history(ids.len()), segs.codes(ids), st, st.new_only)
    return ids, out.astype(np.int32), score, src


def _merge(outs: list[tuple], items: pl.Series) -> Recommendations:
    """Every partition's lists in customer order. Each partition's arrays are put in place and
    dropped from ``outs`` (emptied): the lists are held once, not three times (the parts, their
    concatenation and its reordered copy)."""
    ids = pl.concat([o[0] for o in outs]).rechunk()
    order = ids.arg_sort().to_numpy()
    where = np.empty(order.size, np.int64)  # where = order^-1: the output row of each input row
    where[order] = np.arange(order.size, dtype=np.int64)
    ids = ids.gather(order)
    del order
    arrays = []
    for i in (1, 2, 3):  # the dtype np.concatenate would give
        arrays.append(np.empty((where.size, *outs[0][i].shape[1:]), np.result_type(*(o[i] for o in outs))))
    lo = 0
    while outs:
        o = outs.pop(0)
        hi = lo + o[0].len()
        for dst, a in zip(arrays, o[1:], strict=True):
            dst[where[lo:hi]] = a
        lo = hi
        del o
    return Recommendations(ids, items, *arrays)


def _empty_recs(items: pl.Series, id_type, k: int) -> Recommendations:
    return Recommendations(pl.Series("customer_id", [], dtype=id_type or pl.Int64), items,
                           np.full((0, k), -1, np.int32), np.zeros((0, k)), np.zeros((0, k), np.int8))


def _evaluate(parked: Parked, passes: Partitioning, model: Model, counts: CoCounts, st: RecommendSettings,
              cutoff: dt.date, notes: list[str], progress: Progress | None) -> pl.DataFrame:
    """Per protocol and model the users per (hits, relevant), summed over the partitions; the metrics."""
    m = model.items.len()
    seg_pop = counts.popularity()
    overall = popularity_order(counts.items, [counts.items])
    hist: dict[tuple[str, str], Counter] = {(p, mod): Counter() for p, _ in PROTOCOLS for mod in MODELS}
    for part in passes.each("recommend: evaluation", progress):
        e = parked.get(part)["eval"]
        n = e["users"]
        zeros = np.zeros(n, np.int64)
        for protocol, new_only in PROTOCOLS:
            runs = {"centile": _score(model, seg_pop, e["hist"], e["seg"], st, new_only),
                    # popularity: the same list for everyone (all items), or without the bought ones (new only)
                    "popularity": _score(model, overall, e["hist"] if new_only else _no_history(n), zeros, st,
                                         new_only, neighbours=False)}
            for name, (out, _s, _src) in runs.items():
                hist[(protocol, name)] += _hits(out, e["relevant"][protocol], n, m)
    rows = [{"protocol": p, "model": mod, "k": st.k, **_metrics(hist[(p, mod)], st.k)}
            for p, _ in PROTOCOLS for mod in MODELS]
    ev = pl.DataFrame(rows, schema={"protocol": pl.String, "model": pl.String, "k": pl.Int64, "users": pl.Int64,
                                    "hit_rate": pl.Float64, "precision": pl.Float64, "recall": pl.Float64})
    base = ev.filter(pl.col("model") == "popularity").select("protocol", pl.col("hit_rate").alias("__base"))
    ev = (ev.join(base, on="protocol", how="left", maintain_order="left")
          .with_columns(beats_popularity=pl.when(pl.col("model") == "centile")
                        .then(pl.col("hit_rate") > pl.col("__base")).otherwise(None))
          .drop("__base").with_columns(cutoff=pl.lit(cutoff)))
    pop = {r["protocol"]: r for r in ev.filter(pl.col("model") == "popularity").iter_rows(named=True)}
    for r in ev.filter(pl.col("model") == "centile").iter_rows(named=True):
        for metric, label in (("hit_rate", "HitRate"), ("precision", "Precision"), ("recall", "Recall")):
            if not r[metric] > pop[r["protocol"]][metric]:
                notes.append(f"recommend: on {r['protocol']} the recommender does not beat popularity on "
                             f"{label}@{st.k} ({r[metric]:.4f} vs {pop[r['protocol']][metric]:.4f})")
    return ev


# ---------------------------------------------------------------------------
# in-memory entry points

def evaluate(lines: pl.DataFrame, st: RecommendSettings, cutoff: dt.date,
             segments: pl.DataFrame | None = None, partitions: int = 1) -> tuple[pl.DataFrame, list[str]]:
    """Fit before ``cutoff``, score on the items bought from ``cutoff`` on; centile vs popularity."""
    items = lines.get_column("item").unique().sort()
    res = recommend_from(FrameLines(lines, partitions), items, st, cutoff, segments, cutoff=cutoff,
                         recommendations=False)
    return res.evaluation, res.notes


def compute_recommendations(lines: pl.DataFrame, st: RecommendSettings, as_of: dt.date,
                            segments: pl.DataFrame | None = None, *, evaluate_cutoff: dt.date | None = None,
                            partitions: int = 1) -> RecommendResult:
    """recommendations (fit on every basket before ``as_of``) and, with a cutoff, the evaluation
    (``partitions``: process the customers in that many parts; the same result)."""
    items = lines.get_column("item").unique().sort()
    return recommend_from(FrameLines(lines, partitions), items, st, as_of, segments, cutoff=evaluate_cutoff)


def write_recommendations(res: RecommendResult, staging) -> dict[str, int]:
    out = {"recommendations": res.recs.write(staging.path("recommendations.parquet"))}
    if res.evaluation is not None:
        res.evaluation.write_parquet(staging.path("recommendation_eval.parquet"), compression="zstd")
        out["recommendation_eval"] = res.evaluation.height
    return out


def recommend_summary_doc(res: RecommendResult) -> dict:
    doc: dict = {"level": res.level, "customers": res.recs.customers_with_rows, "rows": res.recs.height,
                 "notes": res.notes}
    if res.evaluation is not None:
        doc["evaluation"] = res.evaluation.drop("cutoff").to_dicts()
    return doc
