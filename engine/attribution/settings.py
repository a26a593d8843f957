"""``[attribution]``: the settings of attribution over touchpoint paths, parsed and checked.

Light on purpose (no models, no kernels): registering the config section does not import what
the models need.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centile.config import Config, check_keys
from centile.errors import ConfigError

KEYS = ("lookback_days", "collapse_repeats", "max_path_length", "half_life_days", "markov_orders", "shapley",
        "segments", "paths", "separator", "channel_media")
#: segment columns used when ``[attribution] segments`` is not set (those present)
DEFAULT_SEGMENTS = ("club", "rfm_segment")


@dataclass(frozen=True)
class AttributionSettings:
    lookback_days: int = 30
    collapse_repeats: bool = False
    max_path_length: int = 0  # 0: every touch
    half_life_days: float = 7.0
    markov_orders: tuple[int, ...] = (1,)
    shapley: bool | None = None  # None: on when there are at most 20 channels (noted otherwise)
    segments: tuple[str, ...] | None = None  # None: DEFAULT_SEGMENTS where present
    paths: str | None = None
    separator: str = " > "
    channel_media: Mapping[str, str] = field(default_factory=dict)


def _int(raw: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    v = raw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise ConfigError(f"[attribution] {key} = {v!r}: must be an integer >= {minimum}")
    return v


def _bool(raw: Mapping[str, Any], key: str, default: bool) -> bool:
    v = raw.get(key, default)
    if not isinstance(v, bool):
        raise ConfigError(f"[attribution] {key} = {v!r}: must be true or false")
    return v


def parse_settings(section: Mapping[str, Any], base: Path | None = None) -> AttributionSettings:
    """``[attribution]`` → :class:`AttributionSettings`; a bad value raises :class:`ConfigError` naming it."""
    check_keys("[attribution]", section, KEYS)
    hl = section.get("half_life_days", 7.0)
    if isinstance(hl, bool) or not isinstance(hl, (int, float)) or not hl > 0 or hl == float("inf"):
        raise ConfigError(f"[attribution] half_life_days = {hl!r}: must be a positive number of days")
    orders = section.get("markov_orders", [1])
    if (not isinstance(orders, list) or not all(isinstance(o, int) and not isinstance(o, bool) for o in orders)
            or not set(orders) <= {1, 2, 3}):
        raise ConfigError(f"[attribution] markov_orders = {orders!r}: must be a list of orders among 1, 2, 3 "
                          "(e.g. [1, 2]; [] for none)")
    segs = section.get("segments")
    if segs is not None and (not isinstance(segs, list) or not all(isinstance(s, str) for s in segs)):
        raise ConfigError(f"[attribution] segments = {segs!r}: must be a list of segment column names")
    paths = section.get("paths")
    if paths is not None:
        if not isinstance(paths, str) or not paths:
            raise ConfigError(f"[attribution] paths = {paths!r}: must be the file name of a path table")
        if base is not None and not Path(paths).is_absolute():
            paths = str(base / paths)
    sep = section.get("separator", " > ")
    if not isinstance(sep, str) or sep == "":
        raise ConfigError(f"[attribution] separator = {sep!r}: must be a non-empty string such as ' > '")
    cm = section.get("channel_media", {})
    if not isinstance(cm, Mapping) or not all(isinstance(v, str) for v in cm.values()):
        raise ConfigError(f"[attribution] channel_media = {cm!r}: must map channel names to contact media, "
                          'e.g. { newsletter = "email" }')
    return AttributionSettings(
        lookback_days=_int(section, "lookback_days", 30, 1), collapse_repeats=_bool(section, "collapse_repeats", False),
        max_path_length=_int(section, "max_path_length", 0, 0), half_life_days=float(hl),
        markov_orders=tuple(sorted(set(orders))), shapley=None if "shapley" not in section else _bool(section, "shapley", True),
        segments=None if segs is None else tuple(segs), paths=paths, separator=sep,
        channel_media={str(k): v for k, v in cm.items()})


def attribution_settings(cfg: Config) -> AttributionSettings:
    base = Path(cfg.source).parent if cfg.source else None
    return parse_settings(cfg.section("attribution"), base)
