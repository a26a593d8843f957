"""``centile steer``: CLV, then affinity, budgets and the contact plan, written atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import polars as pl

from centile.backend import open_inputs
from centile.clv.compute import TIME_UNITS, clv_settings, compute_clv
from centile.clv.models import FitError
from centile.config import Config
from centile.errors import InputError
from centile.io.outputs import staged_output, write_manifest
from centile.runtime import Progress, numba_threads
from centile.steering.compute import SteeringResult, compute_steering, plan_contacts, write_steering
from centile.steering.history import History
from centile.steering.settings import SteeringSettings, steering_settings


def global_holdout(cfg: Config, ids: pl.Series, as_of) -> tuple[pl.Series | None, str | None]:
    """The ids of the ``[holdout]`` global long-term holdout members among ``ids`` (never contacted)."""
    from centile.uplift.holdout import uniforms

    spec = cfg.settings("holdout")
    if spec.global_share <= 0:
        return None, None
    if spec.global_until and as_of and as_of > spec.global_until:
        return None, f"global holdout ended on {spec.global_until}; not applied"
    glob = uniforms(ids, spec.global_salt, cfg.seed) < spec.global_share
    return ids.filter(pl.Series(glob)), f"{int(glob.sum()):,} global holdout members are never contacted"


def steer(s, cfg: Config, st: SteeringSettings, clv: pl.DataFrame, segments: pl.DataFrame | None = None,
          progress: Progress | None = None, history: History | None = None) -> SteeringResult:
    """compute_steering with the CLV horizon, margin and the global holdout of ``cfg`` (``history``:
    where the order history comes from, default the ``orders`` view of ``s``)."""
    cs = clv_settings(cfg)
    horizon_days = cs.horizon * TIME_UNITS[cs.time_unit]
    ids = clv["customer_id"]
    if s.has("customers"):
        ids = pl.concat([ids, s.frame("SELECT DISTINCT customer_id FROM customers WHERE customer_id IS NOT NULL")[
            "customer_id"].cast(ids.dtype)]).unique()
    glob, note = global_holdout(cfg, ids, s.as_of)
    res = compute_steering(s, st, clv, clv_horizon_days=horizon_days, clv_margin=cs.margin, global_holdout=glob,
                           segments=segments, progress=progress, history=history)
    contacts = plan_contacts(res.plan, s.as_of, horizon_days / st.periods, cfg.settings("holdout"), cfg.seed)
    summary = {**res.summary, "horizon_start": s.as_of}
    return replace(res, notes=res.notes + ((note,) if note else ()), contacts=contacts, summary=summary)


def run_steering(cfg: Config, out: str | Path, *, settings: SteeringSettings | None = None,
                 progress: Progress | None = None) -> SteeringResult:
    """Open the session, fit CLV, plan, and write everything atomically into ``out``.

    ``settings``: default the ``[steering]`` section of ``cfg`` (an absent section means
    the defaults, with the media taken from the contacts table).
    """
    from centile.features.compute import manifest

    st = settings or steering_settings(cfg)
    if st.proposals is not None:
        return _run_from_proposals(cfg, st, out)
    with staged_output(out) as staging, open_inputs(cfg, progress, only=("orders", "contacts", "customers"),
                                                                 spill=staging.spill) as s:
        with staging.timed("steering"), numba_threads(cfg.threads):
            try:
                clv = compute_clv(s, clv_settings(cfg), progress=progress)
            except FitError as exc:
                raise InputError(f"steering needs the customer-value model, which did not fit: {exc}") from None
            res = steer(s, cfg, st, clv.customers, progress=progress)
        rows = write_steering(res, staging)
        rows["rejects"] = s.total_rejects
        write_manifest(staging, manifest(s, "steering", {"steering": res.summary}, rows))
    return replace(res, out=staging.target)


def from_proposals(cfg: Config, st: SteeringSettings) -> SteeringResult:
    """The plan from ``[steering] proposals`` (and ``budgets``), with the global holdout of ``cfg``."""
    from centile.steering.proposals import PROPOSAL_COLUMNS, plan_from_proposals, read_table

    assert st.proposals is not None
    ids = read_table(st.proposals, "proposals", PROPOSAL_COLUMNS)["customer_id"].unique().sort()
    glob, note = global_holdout(cfg, ids, cfg.as_of)
    res = plan_from_proposals(st, global_holdout=glob)
    return replace(res, notes=res.notes + ((note,) if note else ()))


def _run_from_proposals(cfg: Config, st: SteeringSettings, out: str | Path) -> SteeringResult:
    from centile.io.outputs import build_manifest, fingerprint

    with staged_output(out) as staging:
        with staging.timed("steering"), numba_threads(cfg.threads):
            res = from_proposals(cfg, st)
        rows = write_steering(res, staging)
        inputs = {k: fingerprint(p) for k, p in (("proposals", st.proposals), ("budgets", st.budgets)) if p}
        write_manifest(staging, build_manifest("steering", as_of=cfg.as_of.isoformat() if cfg.as_of else None,
                                               inputs=inputs, config=cfg.as_dict(), rows=rows,
                                               summary=res.summary))
    return replace(res, out=staging.target)
