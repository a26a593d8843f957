"""``centile baskets`` and ``centile recommend``: open the inputs, compute, write atomically with a manifest."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from functools import partial
from pathlib import Path

import polars as pl

from centile.baskets.compute import BasketsResult, baskets_from, baskets_summary_doc, write_baskets
from centile.baskets.lines import basket_items, basket_lines
from centile.baskets.parts import SessionLines
from centile.baskets.recommend import (
    RecommendResult,
    recommend_from,
    recommend_lines,
    recommend_summary_doc,
    write_recommendations,
)
from centile.baskets.settings import (
    BasketSettings,
    RecommendSettings,
    basket_settings,
    recommend_settings,
)
from centile.config import Config
from centile.errors import InputError
from centile.runtime import Progress, numba_threads


def read_segments(source: str | Path | pl.DataFrame | None) -> pl.DataFrame | None:
    """customer_id + segment columns from a frame or a Parquet/CSV file (e.g. a run's segments.parquet)."""
    if source is None or isinstance(source, pl.DataFrame):
        df = source
    else:
        p = Path(source)
        try:
            df = pl.read_csv(p) if p.suffix.lower() == ".csv" else pl.read_parquet(p)
        except Exception as exc:  # polars raises several error types for unreadable files
            raise InputError(f"--segments {p}: cannot read it ({exc}); pass a Parquet or CSV file such as a "
                             "run's segments.parquet") from None
    if df is not None and "customer_id" not in df.columns:
        raise InputError(f"--segments {source}: needs a customer_id column (has {', '.join(df.columns[:12])})")
    return df


def _check_columns(seg: pl.DataFrame | None, columns: tuple[str, ...], where: str) -> None:
    if seg is None:
        return
    missing = [c for c in columns if c not in seg.columns]
    if missing:
        raise InputError(f"{where} {missing[0]!r}: not a column of --segments (columns: "
                         f"{', '.join(c for c in seg.columns if c != 'customer_id')})")


def run_baskets(cfg: Config, out: str | Path, *, settings: BasketSettings | None = None,
                segments: str | Path | pl.DataFrame | None = None, progress: Progress | None = None) -> BasketsResult:
    """Association rules overall and per segment into ``out`` (basket_itemsets, basket_rules, basket_summary)."""
    from centile.backend import open_inputs
    from centile.features.compute import manifest
    from centile.io.outputs import staged_output, write_manifest

    st = settings or basket_settings(cfg)
    seg = read_segments(segments)
    if seg is None:
        st = replace(st, segment_by=())
    else:
        _check_columns(seg, st.segment_by, "--segment-by")
    with staged_output(out) as staging, open_inputs(cfg, progress, only=("orders", "products"),
                                                                 spill=staging.spill) as s:
        with staging.timed("baskets"), numba_threads(cfg.threads):
            items = basket_items(s, st.level, st.exclude_returned)
            parts = s.work_partitions() if s.distributed() else s.partitioning()
            source = SessionLines(s, parts, partial(basket_lines, level=st.level,
                                                    exclude_returned=st.exclude_returned), progress)
            res = baskets_from(source, items, st, seg, progress=progress, scratch=staging.spill, sink=staging)
        rows = write_baskets(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "baskets", {"baskets": baskets_summary_doc(res)}, rows))
    return replace(res, out=staging.target)


def run_recommend(cfg: Config, out: str | Path, *, settings: RecommendSettings | None = None,
                  segments: str | Path | pl.DataFrame | None = None, evaluate: dt.date | None = None,
                  progress: Progress | None = None) -> RecommendResult:
    """Top-k items per customer into ``out`` (recommendations.parquet) and, with ``evaluate`` (a cutoff
    date), the time-split evaluation against popularity (recommendation_eval.parquet)."""
    from centile.backend import open_inputs
    from centile.features.compute import manifest
    from centile.io.outputs import staged_output, write_manifest

    st = settings or recommend_settings(cfg)
    bst = basket_settings(cfg)
    seg = read_segments(segments)
    if seg is None:
        st = replace(st, segment_by=None)
    elif st.segment_by:
        _check_columns(seg, (st.segment_by,), "--segment-by")
    with staged_output(out) as staging, open_inputs(cfg, progress, only=("orders", "products"),
                                                                 spill=staging.spill) as s:
        with staging.timed("recommend"), numba_threads(cfg.threads):
            items = basket_items(s, st.level, exclude_returned=False, label="recommend: item dictionary")
            parts = s.work_partitions() if s.distributed() else s.partitioning()
            source = SessionLines(s, parts, partial(recommend_lines, level=st.level,
                                                    exclude_returned=bst.exclude_returned), progress)
            if source.remote and evaluate is None:  # the partitions on the cluster (the evaluation stays here)
                from centile.baskets.remote import recommend_remote

                res = recommend_remote(source, items, st, s.as_of, seg, progress=progress, scratch=staging.spill)
            else:
                res = recommend_from(source, items, st, s.as_of, seg, cutoff=evaluate, progress=progress,
                                     scratch=staging.spill)
        rows = write_recommendations(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "recommend", {"recommend": recommend_summary_doc(res)}, rows))
    return replace(res, out=staging.target)
