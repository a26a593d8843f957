"""Behavioural clusters: k-means, or density-based (HDBSCAN / DBSCAN) extended to everyone.

Preparation (both methods): every configured feature column is turned into
``sign(x) · log1p(|x|)`` (a log that keeps zero and negative net revenue),
missing values are filled -- ``recency_days`` of customers without orders
with the largest observed recency, every other feature with 0 (no orders,
no e-mails) -- and each column is standardised to mean 0 and standard
deviation 1 over all customers. Constant columns are dropped.

k-means (scikit-learn ``KMeans``, seeded) is fitted on a seeded sample of at
most ``fit_sample`` customers and then assigns every customer to the
nearest centre. With ``k = "auto"`` each k in ``k_range`` is fitted and the
k with the best silhouette score on a seeded sample of ``silhouette_sample``
customers wins. Clusters are named ``k1``, ``k2``, … by size, largest first.

Density-based clustering is fitted on a seeded sample of ``density_sample``
customers. Each clustered (non-noise) sample point gets a radius: DBSCAN's
``eps`` for its core points; for HDBSCAN its core distance (the distance to
its ``min_samples``-th neighbour in the sample). Every customer then takes
the cluster of the nearest such point if it lies within that point's
radius, and is ``noise`` otherwise -- one KD-tree query per customer, so it
runs on millions. Clusters are named ``d1``, ``d2``, … by size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from centile.errors import ConfigError
from centile.segments.sums import Moments, group_moments

log = logging.getLogger(__name__)

NOISE = "noise"


@dataclass(frozen=True)
class ClusterResult:
    """Labels per customer plus what was chosen."""

    labels: pl.Series           # String, one per customer
    method: str
    k: int
    features: tuple[str, ...]
    silhouette: dict[int, float] = field(default_factory=dict)
    centres: pl.DataFrame | None = None  # cluster centres in original units (k-means)


def _transformed(frame: pl.DataFrame, cols: tuple[str, ...], fill: float | None) -> np.ndarray:
    """The signed-log1p matrix (n, p) of ``cols`` of ``frame``'s rows: ``recency_days`` missing is
    ``fill`` (the largest recency of all customers), every other missing value 0. Row by row."""
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ConfigError(f"[segments] cluster_features: {missing} not in the feature table; it has: "
                          f"{', '.join(frame.columns)}")
    exprs = []
    for c in cols:
        x = pl.col(c).cast(pl.Float64).fill_nan(None)
        if c == "recency_days" and fill is not None:
            x = x.fill_null(fill)
        x = x.fill_null(0.0)
        exprs.append((x.sign() * x.abs().log1p()).alias(c))
    # a frame of these columns only: a select on the whole table copies every column of it when its
    # columns are chunked differently (the features with the clv_* columns beside them)
    return pl.DataFrame([frame.get_column(c) for c in cols]).select(exprs).to_numpy().astype(np.float64, copy=False)


def recency_fill(frame: pl.DataFrame, cols: tuple[str, ...]) -> float | None:
    """The value of a missing ``recency_days`` (the largest of all customers; a maximum, exact)."""
    if "recency_days" not in cols or "recency_days" not in frame.columns:
        return None
    top = frame.get_column("recency_days").cast(pl.Float64).fill_nan(None).max()
    return None if top is None else float(top)


@dataclass(frozen=True)
class Scaling:
    """The standardisation of the cluster matrix: the kept columns (constant ones dropped) with
    their means and standard deviations over every customer, from exact moments
    (:mod:`centile.segments.sums`), so the same floats for any partitioning."""

    columns: tuple[str, ...]
    fill: float | None
    keep: np.ndarray
    mean: np.ndarray
    sd: np.ndarray

    @property
    def used(self) -> tuple[str, ...]:
        return tuple(c for c, k in zip(self.columns, self.keep, strict=True) if k)

    def apply(self, frame: pl.DataFrame) -> np.ndarray:
        """The standardised matrix of ``frame``'s rows (row by row: any subset gives its rows' bits)."""
        z = _transformed(frame, self.columns, self.fill)
        return np.ascontiguousarray((z[:, self.keep] - self.mean) / self.sd)


def matrix_moments(frame: pl.DataFrame, cols: tuple[str, ...], fill: float | None) -> list[Moments]:
    """Exact moments (sums and squares) of each transformed column over ``frame``'s rows: mergeable
    state (:func:`merge_moments`) for :func:`scaling`."""
    z = _transformed(frame, cols, fill)
    codes = np.zeros(z.shape[0], np.int64)
    return [group_moments(codes, [0], np.ascontiguousarray(z[:, j]), squares=True).get(0, True)
            for j in range(z.shape[1])]


def merge_moments(a: list[Moments], b: list[Moments]) -> list[Moments]:
    """``a`` with ``b`` merged in, column by column."""
    return [x.add(y) for x, y in zip(a, b, strict=True)]


def scaling(cols: tuple[str, ...], fill: float | None, moments: list[Moments]) -> Scaling:
    """The :class:`Scaling` from the merged moments: means and population standard deviations,
    each rounded once; columns with a deviation of at most 1e-12 are dropped."""
    mean = np.array([m.mean() if m.count else 0.0 for m in moments], dtype=np.float64)
    sd = np.array([m.std(ddof=0) or 0.0 for m in moments], dtype=np.float64)
    keep = sd > 1e-12
    if not keep.any():
        raise ConfigError(f"[segments] cluster_features {list(cols)}: every column is constant; nothing to cluster")
    return Scaling(tuple(cols), fill, keep, mean[keep], sd[keep])


def prepare_matrix(features: pl.DataFrame, cols: tuple[str, ...]
                   ) -> tuple[np.ndarray, tuple[str, ...], np.ndarray, np.ndarray]:
    """Standardised signed-log1p matrix (n, p) of ``cols`` (constant columns dropped), the kept
    columns, and their means and standard deviations before standardising."""
    fill = recency_fill(features, cols)
    sc = scaling(cols, fill, matrix_moments(features, cols, fill))
    return sc.apply(features), sc.used, sc.mean, sc.sd


def _sample(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= size else np.sort(rng.choice(n, size, replace=False))


def _by_size(raw: np.ndarray, prefix: str, noise: np.ndarray | None = None) -> tuple[pl.Series, np.ndarray]:
    """Rename raw cluster ids ``0..k-1`` to ``<prefix>1..`` by size (largest first, ties by id)."""
    k = int(raw.max()) + 1 if raw.size and raw.max() >= 0 else 0
    counts = np.bincount(raw[raw >= 0], minlength=k)
    order = np.lexsort((np.arange(k), -counts))
    rename = np.empty(k, np.int64)
    rename[order] = np.arange(k)
    names = np.array([f"{prefix}{i + 1}" for i in range(k)] + [NOISE], dtype=object)
    idx = np.where(raw >= 0, rename[np.maximum(raw, 0)] if k else 0, k)
    return pl.Series("cluster", names[idx], dtype=pl.String), order


def kmeans_sample(n: int, fit_sample: int, seed: int) -> tuple[np.ndarray, np.random.Generator]:
    """The positions (in customer order) of the k-means fit's seeded sample of at most
    ``fit_sample`` of the ``n`` customers, and the generator for the later draws."""
    rng = np.random.default_rng(seed)
    return _sample(n, fit_sample, rng), rng


def fit_kmeans(zf: np.ndarray, k: int | str, rng: np.random.Generator, *, k_range: tuple[int, int], seed: int,
               silhouette_sample: int, n_init: int) -> tuple[Any, int, dict[int, float]]:
    """k-means fitted on the sample ``zf`` (k chosen by silhouette with ``k = "auto"``): the model,
    the k used and the silhouettes."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    scores: dict[int, float] = {}
    if k == "auto":
        # candidates are fitted on a smaller sample (4 × the silhouette sample) and scored on part of it
        sel = zf[_sample(zf.shape[0], 4 * silhouette_sample, rng)]
        sil_idx = _sample(sel.shape[0], silhouette_sample, rng)
        for kk in range(k_range[0], min(k_range[1], sel.shape[0] - 1) + 1):
            km = KMeans(kk, n_init=n_init, random_state=seed).fit(sel)
            lab = km.labels_[sil_idx]
            if len(np.unique(lab)) < 2:
                continue
            scores[kk] = float(silhouette_score(sel[sil_idx], lab))
        if not scores:
            raise ConfigError("[segments] k = 'auto': too few distinct customers to choose k by silhouette")
        k_used = max(scores, key=lambda kk: (scores[kk], -kk))
        log.info("k-means: k=%d chosen by silhouette %s", k_used, {a: round(b, 3) for a, b in scores.items()})
    else:
        k_used = int(k)
    if zf.shape[0] < k_used:
        raise ConfigError(f"[segments] k = {k_used}: only {zf.shape[0]} customers to cluster")
    model = KMeans(k_used, n_init=n_init, random_state=seed).fit(zf)
    return model, k_used, scores


def kmeans_names(raw: np.ndarray, model: Any) -> tuple[pl.Series, np.ndarray]:
    """Cluster names ``k1..`` by size of the raw labels of every customer, and the centres in that order."""
    labels, order = _by_size(raw.astype(np.int64), "k")
    return labels, model.cluster_centers_[order]


def kmeans_clusters(z: np.ndarray, k: int | str, *, k_range: tuple[int, int], seed: int, fit_sample: int,
                    silhouette_sample: int, n_init: int) -> tuple[pl.Series, int, dict[int, float], np.ndarray]:
    """k-means labels of every row of ``z`` (names ``k1..`` by size), the k used, silhouettes, centres."""
    n = z.shape[0]
    fit_idx, rng = kmeans_sample(n, fit_sample, seed)
    model, k_used, scores = fit_kmeans(z[fit_idx], k, rng, k_range=k_range, seed=seed,
                                       silhouette_sample=silhouette_sample, n_init=n_init)
    raw = model.predict(z) if fit_idx.size < n else model.labels_
    labels, centres = kmeans_names(raw, model)
    return labels, k_used, scores, centres


def density_clusters(z: np.ndarray, *, method: str, seed: int, sample: int, min_cluster_size: int,
                     min_samples: int, eps: float) -> tuple[pl.Series, int]:
    """HDBSCAN/DBSCAN fitted on a sample, extended to every row by the nearest clustered point."""
    from sklearn.cluster import DBSCAN, HDBSCAN
    from sklearn.neighbors import KDTree

    n = z.shape[0]
    rng = np.random.default_rng(seed)
    idx = _sample(n, sample, rng)
    zs = z[idx]
    ms = min_samples
    if method == "hdbscan":
        fit = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=ms, copy=True).fit(zs)
        lab = fit.labels_
        ok = lab >= 0
        # radius of a clustered sample point: its core distance (min_samples-th neighbour, self included)
        tree_all = KDTree(zs)
        kq = min(ms, zs.shape[0])
        radius = tree_all.query(zs[ok], k=kq)[0][:, -1]
        centres, clab = zs[ok], lab[ok]
    else:
        fit = DBSCAN(eps=eps, min_samples=ms).fit(zs)
        core = np.zeros(zs.shape[0], bool)
        core[fit.core_sample_indices_] = True
        centres, clab = zs[core], fit.labels_[core]
        radius = np.full(centres.shape[0], eps)
    raw = np.full(n, -1, np.int64)
    if centres.shape[0]:
        tree = KDTree(centres)
        step = 1 << 18
        for a in range(0, n, step):  # chunks bound the memory of the query
            d, j = tree.query(z[a:a + step], k=1)
            d, j = d[:, 0], j[:, 0]
            raw[a:a + step] = np.where(d <= radius[j] * (1 + 1e-9), clab[j], -1)
    labels, _order = _by_size(raw, "d")
    k = int(raw.max()) + 1 if raw.size else 0
    return labels, k


def centres_frame(centres: np.ndarray, cols: tuple[str, ...], mean: np.ndarray, sd: np.ndarray) -> pl.DataFrame:
    """k-means centres back in original units (inverse of the standardisation and signed log1p)."""
    x = centres * sd + mean
    orig = np.sign(x) * np.expm1(np.abs(x))
    # 9 significant digits of each column's scale: k-means centres may differ in the last bits
    # between runs (BLAS reductions), and the table should not change bytes for that
    scale = np.abs(orig).max(axis=0)
    quantum = 10.0 ** (np.floor(np.log10(np.where(scale > 0, scale, 1.0))) - 8)
    orig = np.round(orig / quantum) * quantum + 0.0  # + 0.0 turns -0.0 into 0.0
    df = pl.DataFrame(orig, schema=list(cols), orient="row")
    return df.insert_column(0, pl.Series("cluster", [f"k{i + 1}" for i in range(centres.shape[0])]))
