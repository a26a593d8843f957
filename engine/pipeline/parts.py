"""Helpers for stage keys: the part of the config a stage depends on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from centile.config import Config


def config_part(*keys: str) -> Callable[[Config], Any]:
    """The config's top-level ``keys`` and its sections of those names (as in the manifest)."""
    def part(cfg: Config) -> Any:
        d = cfg.as_dict()
        return {k: d.get(k) for k in keys} | {"sections": {k: d["sections"].get(k) for k in keys}}
    return part
