"""The composition root: the capabilities of ``centile run``, and :func:`run_pipeline`.

Importing a capability's ``stage`` and ``report`` modules registers its stage(s)
and report section(s); the runner orders the stages from the frames they read
and write, the report shows the sections in the order they are registered
here. Nothing imports this module back (the registries load it by name).

Stages today: features → clv → clubs (ranks) → segments → clv_groups → uplift,
then report.html.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from centile.config import Config
from centile.pipeline.runner import PipelineResult, execute
from centile.pipeline.stage import stages
from centile.report.page import write_report
from centile.runtime import Progress

#: The built-in capabilities, in the order of their report sections (the stages run in the
#: order their declared frames require). Each package's ``stage`` module registers its
#: stage(s) (and config section), its ``report`` module its report section(s).
CAPABILITIES = ("features", "clubs", "segments", "clv", "steering", "baskets", "uplift", "attribution")

for _name in CAPABILITIES:
    for _part in ("stage", "report"):
        try:
            importlib.import_module(f"centile.{_name}.{_part}")
        except ModuleNotFoundError as exc:
            if exc.name != f"centile.{_name}.{_part}":
                raise
# [refresh] (centile ingest --state): a config section without a stage
importlib.import_module("centile.refresh.settings")

__all__ = ["PipelineResult", "run_pipeline"]


def _report(results: Path, path: Path, cfg: Config, name: str) -> Path:
    return write_report(results, path, cfg, name=name)


def run_pipeline(cfg: Config, out: str | Path, *, force: bool = False, previous: str | Path | None = None,
                 progress: Progress | None = None, report: bool = True,
                 state: str | Path | None = None, keep_runs: int = 0) -> PipelineResult:
    """Run every stage the inputs allow into ``out`` (atomically), reusing unchanged stages.

    Parameters
    ----------
    cfg : Config
        The run configuration (:func:`centile.config.load_config`).
    out : path
        The output folder; replaced whole when the run succeeds.
    force : bool
        Recompute every stage even when ``out`` holds outputs with the same key.
    previous : path, optional
        An earlier run's folder for the clubs stability report (stayed / joined / left).
    report : bool
        Render ``report.html`` (default).
    state : path, optional
        A refresh state (``centile ingest --state``): every stage computes from it, the order
        lines and e-mail events of its ledger's batch files are not read again (a state built
        before a stage's table was kept: that stage reads them; :mod:`centile.refresh.run`).
    keep_runs : int
        For an output URL: after publishing, remove the runs under ``<url>/runs/`` other than the
        newest ``keep_runs`` (0, the default: keep every run).

    Returns
    -------
    PipelineResult
        Per stage: ``status`` (ran, reused, skipped), ``reason`` when skipped,
        ``key``, ``seconds``, ``files``.
    """
    options: dict[str, object] = {"previous": str(previous) if previous else None}
    if state is not None:
        from centile.refresh.run import run_config

        cfg, options["refresh_state"] = run_config(cfg, state)
    return execute(stages(), cfg, out, force=force, options=options, progress=progress,
                   report=_report if report else None, keep_runs=keep_runs)
