"""The ``[baskets]`` and ``[recommend]`` config sections, parsed into frozen settings."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from centile.config import Config, as_date, check_keys
from centile.errors import ConfigError

LEVELS = ("product", "category")
SIMILARITIES = ("cosine", "lift")
BASKET_KEYS = ("level", "min_count", "min_support", "min_confidence", "max_size", "max_basket_items",
               "exclude_returned", "segment_by", "top_rules", "all_splits", "enabled")
RECOMMEND_KEYS = ("level", "k", "new_only", "similarity", "half_life_days", "repurchase_boost",
                  "min_pair_count", "max_neighbors", "segment_by", "cutoff", "enabled")


@dataclass(frozen=True)
class BasketSettings:
    """``[baskets]``: association rules per segment.

    A rule or itemset is kept when its basket count is at least
    ``max(min_count, ceil(min_support * N))`` (``N`` = baskets of the segment), an
    integer computed exactly from the decimal text of ``min_support``.
    """

    level: str = "product"
    min_count: int = 5
    min_support: Fraction | None = None
    min_confidence: Fraction = Fraction(0)
    max_size: int = 2
    max_basket_items: int = 200
    exclude_returned: bool = True
    segment_by: tuple[str, ...] = ("club", "rfm_segment")
    top_rules: int = 10
    all_splits: bool = False
    enabled: bool = True

    def threshold(self, n_baskets: int) -> int:
        """The integer count threshold for a segment of ``n_baskets`` baskets."""
        t = self.min_count
        if self.min_support is not None:
            t = max(t, math.ceil(self.min_support * n_baskets))
        return max(t, 1)


@dataclass(frozen=True)
class RecommendSettings:
    """``[recommend]``: per-customer top-k items and the time-split evaluation."""

    level: str = "product"
    k: int = 10
    new_only: bool = True
    similarity: str = "cosine"
    half_life_days: float = 180.0
    repurchase_boost: float = 1.0
    min_pair_count: int = 2
    max_neighbors: int = 100
    segment_by: str | None = "rfm_segment"
    cutoff: dt.date | None = None
    enabled: bool = True


def _int(raw: Mapping[str, Any], key: str, where: str, default: int, minimum: int) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"{where} {key} = {v!r}: must be an integer >= {minimum}")
    return v


def _bool(raw: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"{where} {key} = {v!r}: must be true or false")
    return v


def _ratio(v: Any, where: str, *, zero_ok: bool) -> Fraction:
    """An exact fraction from a TOML number (via its decimal text: 0.1 is 1/10, not the double)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ConfigError(f"{where} = {v!r}: must be a number in (0, 1]")
    f = Fraction(repr(v)) if isinstance(v, float) else Fraction(v)
    if f > 1 or f < 0 or (f == 0 and not zero_ok):
        raise ConfigError(f"{where} = {v!r}: must be in {'[0' if zero_ok else '(0'}, 1]")
    return f


def _level(v: Any, where: str) -> str:
    if v not in LEVELS:
        raise ConfigError(f"{where} level = {v!r}: must be one of {', '.join(LEVELS)}")
    return v


def _columns(v: Any, where: str) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list | tuple) or not all(isinstance(c, str) and c for c in v):
        raise ConfigError(f"{where} segment_by = {v!r}: must be a column name or a list of them")
    return tuple(dict.fromkeys(v))


def parse_baskets(raw: Mapping[str, Any], **overrides: Any) -> BasketSettings:
    """``[baskets]`` → :class:`BasketSettings`; CLI overrides (not None) win."""
    w = "[baskets]"
    check_keys(w, raw, BASKET_KEYS)
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    ms = raw.get("min_support")
    st = BasketSettings(
        level=_level(raw.get("level", "product"), w),
        min_count=_int(raw, "min_count", w, 5, 1),
        min_support=None if ms is None else _ratio(ms, f"{w} min_support", zero_ok=False),
        min_confidence=_ratio(raw.get("min_confidence", 0), f"{w} min_confidence", zero_ok=True),
        max_size=_int(raw, "max_size", w, 2, 1),
        max_basket_items=_int(raw, "max_basket_items", w, 200, 2),
        exclude_returned=_bool(raw, "exclude_returned", w, True),
        segment_by=_columns(raw.get("segment_by", ["club", "rfm_segment"]), w),
        top_rules=_int(raw, "top_rules", w, 10, 1),
        all_splits=_bool(raw, "all_splits", w, False),
        enabled=_bool(raw, "enabled", w, True),
    )
    if st.max_size not in (2, 3):
        raise ConfigError(f"{w} max_size = {st.max_size}: itemsets of size 2 (default) or 3 are counted; "
                          "use max_size = 2 or 3")
    return st


def parse_recommend(raw: Mapping[str, Any], **overrides: Any) -> RecommendSettings:
    """``[recommend]`` → :class:`RecommendSettings`; CLI overrides (not None) win."""
    w = "[recommend]"
    check_keys(w, raw, RECOMMEND_KEYS)
    raw = {**raw, **{k: v for k, v in overrides.items() if v is not None}}
    sim = raw.get("similarity", "cosine")
    if sim not in SIMILARITIES:
        raise ConfigError(f"{w} similarity = {sim!r}: must be one of {', '.join(SIMILARITIES)}")
    hl = raw.get("half_life_days", 180.0)
    if isinstance(hl, bool) or not isinstance(hl, int | float) or not (0 < hl < math.inf):
        raise ConfigError(f"{w} half_life_days = {hl!r}: must be a positive number of days")
    boost = raw.get("repurchase_boost", 1.0)
    if isinstance(boost, bool) or not isinstance(boost, int | float) or not (0 <= boost < math.inf):
        raise ConfigError(f"{w} repurchase_boost = {boost!r}: must be a number >= 0")
    seg = raw.get("segment_by", "rfm_segment")
    if seg is not None and not isinstance(seg, str):
        raise ConfigError(f"{w} segment_by = {seg!r}: must be one column name (or \"\" for none)")
    return RecommendSettings(
        level=_level(raw.get("level", "product"), w),
        k=_int(raw, "k", w, 10, 1),
        new_only=_bool(raw, "new_only", w, True),
        similarity=sim,
        half_life_days=float(hl),
        repurchase_boost=float(boost),
        min_pair_count=_int(raw, "min_pair_count", w, 2, 1),
        max_neighbors=_int(raw, "max_neighbors", w, 100, 1),
        segment_by=seg or None,
        cutoff=as_date(raw.get("cutoff"), f"{w} cutoff"),
        enabled=_bool(raw, "enabled", w, True),
    )


def basket_settings(cfg: Config, **overrides: Any) -> BasketSettings:
    return parse_baskets(cfg.section("baskets"), **overrides) if overrides else cfg.settings("baskets")


def recommend_settings(cfg: Config, **overrides: Any) -> RecommendSettings:
    return parse_recommend(cfg.section("recommend"), **overrides) if overrides else cfg.settings("recommend")


__all__ = ["BasketSettings", "RecommendSettings", "basket_settings", "parse_baskets", "parse_recommend",
           "recommend_settings"]
