"""The ordered registry of report sections: (id, title, renderer); each capability adds its own."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from centile.config import Config
from centile.registry import Registry, load_builtin

#: renders one section over a results folder; "" when its outputs are absent
Renderer = Callable[[Path, "Config | None"], str]


@dataclass(frozen=True)
class Section:
    """One ``<section id=...>`` of report.html."""

    id: str
    title: str
    render: Renderer


SECTIONS: Registry[Section] = Registry("report section")


def register_section(id: str, title: str, render: Renderer) -> Section:
    """Append a section to the page (after those registered before it); a taken id raises."""
    return SECTIONS.add(id, Section(id, title, render))


def sections() -> list[Section]:
    """Every section in page order: the KPI tiles, then the capabilities' sections."""
    load_builtin()
    return SECTIONS.items()


def _kpis(results: Path, cfg: Config | None) -> str:
    from centile.report.kpis import kpis_section

    return kpis_section(results, cfg)


register_section("kpis", "KPIs", _kpis)
