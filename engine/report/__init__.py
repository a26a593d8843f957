"""``report.html``: one self-contained page over a run's output folder."""

from centile.report.page import kpi_table, render_report, write_report

__all__ = ["kpi_table", "render_report", "write_report"]
