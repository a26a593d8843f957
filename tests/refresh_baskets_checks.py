"""Checks shared by the refresh tests: the basket lines of a refresh state against the lines of a full read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import MappingProxyType

import polars as pl
from hypothesis import event

from centile.backend.partitions import Partitioning
from centile.backend.session import open_session
from centile.baskets import compute_baskets, parse_baskets, parse_recommend
from centile.baskets.lines import basket_lines
from centile.baskets.recommend import compute_recommendations
from centile.config import Config, TableSpec
from centile.errors import ConfigError, InputError
from centile.refresh.baskets import StateLines, state_baskets

KEY = ["customer_id", "order_id", "item", "kept"]


def canonical(lines: pl.DataFrame) -> pl.DataFrame:
    """Per (customer, order, item, kept): the first and last order_ts, sorted. Everything the
    basket and recommendation passes use of the lines is a function of it (centile.refresh.baskets)."""
    return (lines.group_by(KEY).agg(first=pl.col("order_ts").min(), last=pl.col("order_ts").max())
            .sort(KEY))


def state_lines(cfg: Config, state: Path, as_of: dt.date, level: str, count: int) -> pl.DataFrame:
    """Every stand-in line of the state, read in ``count`` pass partitions."""
    sb = state_baskets(cfg, state, as_of)
    src = StateLines(sb, Partitioning(count), level, exclude_returned=False, all_kept=False, progress=None)
    return pl.concat(list(src.each("test")))


def _outputs(lines: pl.DataFrame, as_of: dt.date, cutoff: dt.date) -> list:
    """The rules, itemsets, recommendations and evaluation computed from ``lines`` (or the error)."""
    out: list = []
    for exclude in (True, False):
        kept = lines.filter(pl.col("kept")) if exclude else lines
        if kept.height == 0:
            out.append(None)
            continue
        seg = pl.DataFrame({"customer_id": kept["customer_id"].unique().sort()}).with_columns(
            club=(pl.col("customer_id") % 2).cast(pl.String))
        res = compute_baskets(kept, parse_baskets({"min_count": 1, "max_size": 3, "all_splits": True,
                                                   "segment_by": ["club"], "exclude_returned": exclude}), seg)
        out += [res.rules, res.itemsets, res.summary]
        rec_lines = lines if exclude else lines.with_columns(kept=pl.lit(True))
        try:
            rec = compute_recommendations(rec_lines, parse_recommend({"k": 3, "min_pair_count": 1, "segment_by": "club",
                                                                      "half_life_days": 3.5}),
                                          as_of, seg, evaluate_cutoff=cutoff, partitions=2)
            out += [rec.recommendations, rec.evaluation]
        except ConfigError as exc:  # no orders before or after the cutoff: the message names their span
            out.append(str(exc))
    return out


def assert_session_lines_equal(cfg: Config, state: Path, s, as_of: dt.date, count: int = 7
                               ) -> dict[str, pl.DataFrame]:
    """The state's stand-in lines equal the lines of session ``s`` (over every batch) in every
    respect the passes use (``canonical``), at both levels, read in the state's partitions and in
    ``count``. Returns the session's lines per level."""
    full = {level: basket_lines(s, level, exclude_returned=False) for level in ("product", "category")}
    for level, want in full.items():
        for parts in (count, int(cfg.settings("refresh").partitions)):
            got = state_lines(cfg, state, as_of, level, parts)
            assert got.schema == want.schema, (got.schema, want.schema)
            assert canonical(got).equals(canonical(want)), f"{level}:\nstate\n{canonical(got)}\nfull\n{canonical(want)}"
    return full


def assert_basket_lines_equal(cfg: Config, state: Path, orders: list[Path], as_of: dt.date,
                              products: Path | None = None, count: int = 7, outputs: bool = True) -> None:
    """The state's stand-in lines equal the lines of a full read over ``orders`` in every respect
    the passes use (``canonical``), at both levels, read in the state's partitions and in
    ``count``; and (``outputs``) rules, itemsets, recommendations and their evaluation computed
    from either are equal."""
    tables = {"orders": TableSpec("orders", tuple(map(str, orders)), "parquet")}
    if products is not None:
        tables["products"] = TableSpec("products", (str(products),), "parquet")
    try:
        s = open_session(Config(tables=MappingProxyType(tables), as_of=as_of))
    except InputError:  # no valid order line yet
        return
    with s:
        full = assert_session_lines_equal(cfg, state, s, as_of, count)
    want = full["product"]
    event(f"basket lines: a key with several lines {want.height > canonical(want).height}, "
          f"a returned-in-full line {not want['kept'].all()}")
    if not outputs:
        return
    for level, want in full.items():
        got = state_lines(cfg, state, as_of, level, count)
        ts = want["order_ts"]
        cutoff = (ts.min() + (ts.max() - ts.min()) / 2).date() if want.height else as_of
        for g, w in zip(_outputs(got, as_of, cutoff), _outputs(want, as_of, cutoff), strict=True):
            if isinstance(w, pl.DataFrame):
                assert g.schema == w.schema and g.equals(w), f"{level}:\nstate\n{g}\nfull\n{w}"
            else:
                assert g == w
