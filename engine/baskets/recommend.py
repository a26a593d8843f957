"""Per-customer recommendations from item co-occurrence, and their time-split evaluation.

Fit: baskets → exact item and pair counts (:mod:`centile.kernels.pairs`) → item-item
scores (cosine c(ij)/√(c(i)c(j)) or lift N·c(ij)/(c(i)c(j))) for pairs held by at least
``min_pair_count`` baskets, the best ``max_neighbors`` per item. A customer's history
weights each bought item by the recency-decayed number of baskets holding it
(``Σ 0.5^(age_days / half_life_days)``, summed in integer units of 1e-9 so the sum
does not depend on the order threads add it in). Scoring and top-k selection run in
:func:`centile.kernels.recommend.recommend`; customers without history, or with fewer
than ``k`` scored candidates, are filled from the popularity within their segment.

Evaluation (``cutoff``): fit on the baskets before the cutoff, score on the items
bought from the cutoff on. Users scored: at least one basket before and at least one
relevant item after ("new items only": items not bought before; "all items": any).
HitRate@k = share of users with at least one hit, Precision@k = mean hits / k,
Recall@k = mean hits / relevant items, for centile and for the popularity baseline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from centile.baskets.compute import basket_lines, build_baskets, item_dictionary, segment_codes
from centile.baskets.settings import RecommendSettings
from centile.errors import ConfigError
from centile.kernels.pairs import item_counts, pair_counts
from centile.kernels.recommend import recommend

_UNITS = 1_000_000_000  # history weights are summed in units of 1e-9


@dataclass
class RecommendResult:
    recommendations: pl.DataFrame
    evaluation: pl.DataFrame | None
    level: str
    notes: list[str] = field(default_factory=list)
    out: object = None


@dataclass(frozen=True)
class Model:
    """A fitted item-item model over the item dictionary ``items``."""

    items: pl.Series
    n_off: np.ndarray
    n_items: np.ndarray
    n_score: np.ndarray
    popularity: np.ndarray  # baskets per item code


def fit(lines: pl.DataFrame, st: RecommendSettings, items: pl.Series, max_basket_items: int = 200) -> Model:
    """Item-item neighbour lists from the baskets of ``lines`` (codes from ``items``)."""
    lines = _kept(lines)
    customers = lines.get_column("customer_id").unique().sort()
    b = build_baskets(lines, items, customers, max_basket_items)
    m = items.len()
    ic = item_counts(b.offsets, b.items, m)
    pa, pb, pc = pair_counts(b.offsets, b.items, m, st.min_pair_count, counts=ic)
    n = float(b.offsets.size - 1)
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


def histories(lines: pl.DataFrame, items: pl.Series, customers: pl.Series, as_of: dt.date,
              half_life_days: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR (offsets, item codes, weights) of each customer's bought items, recency-decayed.

    Lines with ``kept`` false (returned in full) make an item bought but add no weight.
    """
    codes = pl.DataFrame({"item": items, "code": np.arange(items.len(), dtype=np.int64)})
    cust = pl.DataFrame({"customer_id": customers, "crow": np.arange(customers.len(), dtype=np.int64)})
    end = dt.datetime.combine(as_of, dt.time())
    per_basket = (lines.join(codes, on="item", how="inner").join(cust, on="customer_id", how="inner")
                  .group_by("crow", "order_id", "code")
                  .agg(pl.col("order_ts").min(), (pl.col("kept").any() if "kept" in lines.columns else pl.lit(True)).alias("kept")))
    age = (pl.lit(end) - pl.col("order_ts")).dt.total_seconds() / 86400.0
    h = (per_basket.with_columns(
        w=pl.when(pl.col("kept")).then(
            ((pl.lit(0.5) ** (age.clip(lower_bound=0.0) / half_life_days)) * _UNITS).round(0)).otherwise(0.0)
        .cast(pl.Int64))
         .group_by("crow", "code").agg(pl.col("w").sum()).sort("crow", "code"))
    off = np.zeros(customers.len() + 1, np.int64)
    np.add.at(off, h.get_column("crow").to_numpy() + 1, 1)
    return (np.cumsum(off), h.get_column("code").to_numpy().astype(np.int64),
            h.get_column("w").to_numpy().astype(np.float64) / _UNITS)


def recommend_lines(s, level: str, exclude_returned: bool = True) -> pl.DataFrame:
    """The lines of :func:`~centile.baskets.compute.basket_lines` including the returned-in-full ones:
    those make an item bought (never recommended again under new-only) but, with
    ``exclude_returned``, neither count in co-occurrence nor weigh in a history."""
    lines = basket_lines(s, level, exclude_returned=False)
    return lines if exclude_returned else lines.with_columns(kept=pl.lit(True))


def _kept(lines: pl.DataFrame) -> pl.DataFrame:
    return lines.filter(pl.col("kept")) if "kept" in lines.columns else lines


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


def _segments(customers: pl.Series, segments: pl.DataFrame | None, column: str | None,
              notes: list[str]) -> tuple[np.ndarray, int]:
    if column is None:
        return np.zeros(customers.len(), np.int64), 1
    seg, seg_notes = segment_codes(customers, segments, (column,))
    if not seg:
        notes.append(f"recommend: no segment column {column!r}; the popularity fallback is overall")
        return np.zeros(customers.len(), np.int64), 1
    _col, values, codes = seg[0]
    return codes, len(values)


def recommend_for(lines: pl.DataFrame, st: RecommendSettings, as_of: dt.date,
                  segments: pl.DataFrame | None = None, *, new_only: bool | None = None,
                  customers: pl.Series | None = None, model: Model | None = None,
                  neighbours: bool = True, segment_popularity: bool = True,
                  notes: list[str] | None = None) -> tuple[pl.Series, np.ndarray, np.ndarray, np.ndarray, Model]:
    """Codes of the top-k items per customer (rows of ``customers``, sorted ids); see the module doc.

    ``neighbours=False`` leaves the item-item scores out (the popularity baseline);
    ``segment_popularity=False`` uses the overall popularity for every customer.
    """
    notes = notes if notes is not None else []
    new_only = st.new_only if new_only is None else new_only
    items = model.items if model is not None else item_dictionary(lines)
    model = model or fit(lines, st, items)
    if customers is None:
        ids = [lines.get_column("customer_id")]
        if segments is not None:
            ids.append(segments.get_column("customer_id").cast(lines.schema["customer_id"]))
        customers = pl.concat(ids).unique().sort()
    h_off, h_items, h_w = histories(lines, items, customers, as_of, st.half_life_days)
    if segment_popularity:
        seg, n_seg = _segments(customers, segments, st.segment_by, notes)
    else:
        seg, n_seg = np.zeros(customers.len(), np.int64), 1
    m = items.len()
    if n_seg > 1:
        b = build_baskets(_kept(lines), items, customers, 1 << 62)
        per_basket = seg[b.customer]
        seg_counts = []
        sizes = np.diff(b.offsets)
        for g in range(n_seg):
            mask = np.repeat(per_basket == g, sizes)
            seg_counts.append(np.bincount(b.items[mask], minlength=m).astype(np.int64))
    else:
        seg_counts = [model.popularity]
    order, lens = popularity_order(model.popularity, seg_counts)
    if neighbours:
        n_off, n_items, n_score = model.n_off, model.n_items, model.n_score
    else:
        n_off, n_items, n_score = np.zeros(m + 1, np.int64), np.zeros(0, np.int64), np.zeros(0)
    out, score, source = recommend(h_off, h_items, h_w, n_off, n_items, n_score, m, st.k, new_only=new_only,
                                   boost=st.repurchase_boost, segment=seg, pop_order=order, pop_len=lens)
    return customers, out, score, source, model


def to_frame(customers: pl.Series, items: pl.Series, out: np.ndarray, score: np.ndarray,
             source: np.ndarray) -> pl.DataFrame:
    """Long table: customer_id, rank (1..k), item, score, source (co-occurrence / popularity)."""
    nc, k = out.shape
    flat = out.reshape(-1)
    keep = flat >= 0
    rows = np.repeat(np.arange(nc), k)[keep]
    return pl.DataFrame({
        "customer_id": customers.gather(rows),
        "rank": (np.tile(np.arange(1, k + 1), nc)[keep]).astype(np.int16),
        "item": items.gather(flat[keep]),
        "score": score.reshape(-1)[keep],
        "source": pl.Series(np.where(source.reshape(-1)[keep] == 0, "co-occurrence", "popularity"),
                            dtype=pl.String),
    })


def topn_metrics(recs: pl.DataFrame, relevant: pl.DataFrame, k: int) -> dict[str, float | int]:
    """HitRate@k, Precision@k, Recall@k over the users of ``relevant`` (customer_id, item).

    Hits are integers; the means are taken over users sorted by id, so the floats are reproducible.
    """
    rel = relevant.unique()
    per_user = rel.group_by("customer_id").agg(pl.len().alias("relevant"))
    hits = (recs.filter(pl.col("rank") <= k).select("customer_id", "item").join(rel, on=["customer_id", "item"])
            .group_by("customer_id").agg(pl.len().alias("hits")))
    t = (per_user.join(hits, on="customer_id", how="left").with_columns(pl.col("hits").fill_null(0))
         .sort("customer_id"))
    n = t.height
    if n == 0:
        return {"users": 0, "hit_rate": float("nan"), "precision": float("nan"), "recall": float("nan")}
    h = t.get_column("hits").to_numpy().astype(np.int64)
    r = t.get_column("relevant").to_numpy().astype(np.int64)
    return {"users": n, "hit_rate": int((h > 0).sum()) / n, "precision": int(h.sum()) / (n * k),
            "recall": float(np.sum(h / r)) / n}


def evaluate(lines: pl.DataFrame, st: RecommendSettings, cutoff: dt.date,
             segments: pl.DataFrame | None = None) -> tuple[pl.DataFrame, list[str]]:
    """Fit before ``cutoff``, score on the items bought from ``cutoff`` on; centile vs popularity."""
    start = dt.datetime.combine(cutoff, dt.time())
    train = lines.filter(pl.col("order_ts") < start)
    test = lines.filter(pl.col("order_ts") >= start)
    if train.height == 0 or test.height == 0:
        lo, hi = lines.get_column("order_ts").min(), lines.get_column("order_ts").max()
        raise ConfigError(f"--cutoff {cutoff}: needs orders before and after it; the orders run from {lo} to {hi}")
    notes: list[str] = []
    items = item_dictionary(train)
    model = fit(train, st, items)
    users = train.get_column("customer_id").unique().sort()
    bought = train.select("customer_id", "item").unique()
    after = _kept(test).filter(pl.col("customer_id").is_in(users.implode())).select("customer_id", "item").unique()
    relevant = {"all items": after,
                "new items only": after.join(bought, on=["customer_id", "item"], how="anti")}
    rows = []
    for protocol, new_only in (("new items only", True), ("all items", False)):
        for model_name, kw in (("centile", {}), ("popularity", {"neighbours": False, "segment_popularity": False})):
            tr = train
            if model_name == "popularity" and not new_only:
                tr = train.head(0)  # plain popularity: the same list for everyone
            custs, out, score, source, _ = recommend_for(tr, st, cutoff, segments, new_only=new_only,
                                                         customers=users, model=model, notes=notes, **kw)
            recs = to_frame(custs, items, out, score, source)
            rows.append({"protocol": protocol, "model": model_name, "k": st.k,
                         **topn_metrics(recs, relevant[protocol], st.k)})
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
    return ev, notes


def compute_recommendations(lines: pl.DataFrame, st: RecommendSettings, as_of: dt.date,
                            segments: pl.DataFrame | None = None, *, evaluate_cutoff: dt.date | None = None
                            ) -> RecommendResult:
    """recommendations (fit on every basket before ``as_of``) and, with a cutoff, the evaluation."""
    notes: list[str] = []
    custs, out, score, source, model = recommend_for(lines, st, as_of, segments, notes=notes)
    recs = to_frame(custs, model.items, out, score, source)
    ev = None
    if evaluate_cutoff is not None:
        ev, ev_notes = evaluate(lines, st, evaluate_cutoff, segments)
        notes += ev_notes
    return RecommendResult(recs, ev, st.level, notes)


def write_recommendations(res: RecommendResult, staging) -> dict[str, int]:
    out = {}
    res.recommendations.write_parquet(staging.path("recommendations.parquet"), compression="zstd")
    out["recommendations"] = res.recommendations.height
    if res.evaluation is not None:
        res.evaluation.write_parquet(staging.path("recommendation_eval.parquet"), compression="zstd")
        out["recommendation_eval"] = res.evaluation.height
    return out


def recommend_summary_doc(res: RecommendResult) -> dict:
    doc: dict = {"level": res.level, "customers": res.recommendations.get_column("customer_id").n_unique(),
                 "rows": res.recommendations.height, "notes": res.notes}
    if res.evaluation is not None:
        doc["evaluation"] = res.evaluation.drop("cutoff").to_dicts()
    return doc
