"""The ``[steering]`` config section (and its ``[steering.media.<name>]`` tables), validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from centile.config import Config, check_keys
from centile.errors import ConfigError

KEYS = ("periods", "cap", "gap", "target_margin", "cost_ratio", "global_budget", "cost_unit", "response_days",
        "seasonality", "iterations", "proposals", "budgets", "prior_by", "prior_min_customers", "media")
MEDIUM_KEYS = ("cost", "capacity", "capacity_per_period", "cap", "categories", "audience")


@dataclass(frozen=True)
class Medium:
    """One advertising medium: cost per contact (currency), capacity (contacts over the
    horizon; None = unlimited), the categories it features, the customers-table column
    (boolean) of its audience, the capacity in each period (contacts; None = unlimited)
    and its frequency cap per customer over the horizon (None = only ``[steering] cap``)."""

    name: str
    cost: float
    capacity: int | None = None
    categories: tuple[str, ...] = ()
    audience: str | None = None
    capacity_per_period: int | None = None
    cap: int | None = None


@dataclass(frozen=True)
class SteeringSettings:
    """The plan's horizon is the ``[clv] horizon`` split into ``periods``."""

    periods: int = 13
    cap: int = 4
    gap: int = 1
    target_margin: float = 0.1
    cost_ratio: float = 0.6
    global_budget: float | None = None
    cost_unit: float = 0.01
    response_days: int = 14
    seasonality: tuple[float, ...] = ()
    iterations: int = 12
    proposals: Path | None = None
    budgets: Path | None = None
    prior_by: str | None = None
    prior_min_customers: int = 200
    media: tuple[Medium, ...] = field(default_factory=tuple)

    def season(self) -> tuple[float, ...]:
        return self.seasonality or (1.0,) * self.periods

    def as_dict(self) -> dict[str, Any]:
        return {"periods": self.periods, "cap": self.cap, "gap": self.gap, "target_margin": self.target_margin,
                "cost_ratio": self.cost_ratio, "global_budget": self.global_budget, "cost_unit": self.cost_unit,
                "response_days": self.response_days, "seasonality": list(self.season()),
                "iterations": self.iterations, "proposals": str(self.proposals) if self.proposals else None,
                "budgets": str(self.budgets) if self.budgets else None, "prior_by": self.prior_by,
                "prior_min_customers": self.prior_min_customers,
                "media": {m.name: {"cost": m.cost, "capacity": m.capacity, "categories": list(m.categories),
                                   "audience": m.audience, "capacity_per_period": m.capacity_per_period,
                                   "cap": m.cap} for m in self.media}}


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"{key} = {v!r}: must be an integer in [{lo}, {hi}]")
    return v


def _num(v: Any, key: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (lo < v if lo_open else lo <= v) or v > hi:
        raise ConfigError(f"{key} = {v!r}: must be a number in {'(' if lo_open else '['}{lo}, {hi}]")
    return float(v)


def _medium(name: str, raw: Any) -> Medium:
    where = f"[steering.media.{name}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table with cost (and capacity, categories, audience)")
    check_keys(where, raw, MEDIUM_KEYS)
    if "cost" not in raw:
        raise ConfigError(f"{where} needs cost = <currency per contact>")
    cap = raw.get("capacity")
    cats = raw.get("categories", [])
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise ConfigError(f"{where} categories = {cats!r}: must be a list of category names")
    aud = raw.get("audience")
    if aud is not None and not isinstance(aud, str):
        raise ConfigError(f"{where} audience = {aud!r}: must be the name of a boolean column of customers")
    per = raw.get("capacity_per_period")
    mcap = raw.get("cap")
    return Medium(name, _num(raw["cost"], f"{where} cost", 0.0, 1e9, lo_open=True),
                  None if cap is None else _int(cap, f"{where} capacity", 0, 2**53), tuple(cats), aud,
                  None if per is None else _int(per, f"{where} capacity_per_period", 0, 2**53),
                  None if mcap is None else _int(mcap, f"{where} cap", 0, 52))


def parse_steering(section: Mapping[str, Any]) -> SteeringSettings:
    """Validate the raw ``[steering]`` section (ConfigError naming the key and the fix)."""
    check_keys("[steering]", section, KEYS)
    kw: dict[str, Any] = {}
    ints = {"periods": (1, 520), "cap": (0, 52), "gap": (0, 52), "response_days": (1, 365), "iterations": (1, 60),
            "prior_min_customers": (2, 2**31)}
    for key, (lo, hi) in ints.items():
        if key in section:
            kw[key] = _int(section[key], f"[steering] {key}", lo, hi)
    for key, (lo, hi) in {"target_margin": (0.0, 1.0), "cost_ratio": (0.0, 1.0)}.items():
        if key in section:
            kw[key] = _num(section[key], f"[steering] {key}", lo, hi)
    if "cost_unit" in section:
        kw["cost_unit"] = _num(section["cost_unit"], "[steering] cost_unit", 0.0, 1e6, lo_open=True)
    if "global_budget" in section:
        kw["global_budget"] = _num(section["global_budget"], "[steering] global_budget", 0.0, 1e15)
    if "seasonality" in section:
        s = section["seasonality"]
        periods = kw.get("periods", SteeringSettings.periods)
        if (not isinstance(s, list) or len(s) != periods
                or not all(not isinstance(x, bool) and isinstance(x, int | float) and x >= 0 for x in s)):
            raise ConfigError(f"[steering] seasonality = {s!r}: must be {periods} factors >= 0, one per period")
        kw["seasonality"] = tuple(float(x) for x in s)
    for key in ("proposals", "budgets"):
        if key in section:
            if not isinstance(section[key], str) or not section[key]:
                raise ConfigError(f"[steering] {key} = {section[key]!r}: must be the path of a Parquet or CSV file")
            kw[key] = Path(section[key])
    if "prior_by" in section:
        pb = section["prior_by"]
        if not isinstance(pb, str) or not pb:
            raise ConfigError(f"[steering] prior_by = {pb!r}: must be the name of a segment column "
                              "(rfm_segment, or a column of the customers table)")
        kw["prior_by"] = pb
    if "budgets" in kw and "proposals" not in kw:
        raise ConfigError("[steering] budgets needs [steering] proposals: budgets of your own replace the "
                          "CLV-based ones only for a plan from your own scored proposals")
    media = section.get("media", {})
    if not isinstance(media, Mapping):
        raise ConfigError("[steering] media must be tables [steering.media.<name>] with cost = ...")
    kw["media"] = tuple(_medium(str(n), r) for n, r in sorted(media.items()))
    return SteeringSettings(**kw)


def steering_settings(cfg: Config) -> SteeringSettings:
    return parse_steering(cfg.section("steering"))
