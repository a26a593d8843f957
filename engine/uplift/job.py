"""``centile uplift``: the uplift table for the configured inputs, written atomically."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from centile.config import Config
from centile.uplift.compute import (
    UpliftResult,
    uplift_from_session,
    uplift_summary_doc,
    write_uplift,
)
from centile.uplift.inputs import parse_uplift_spec, read_segments


def run_uplift(cfg: Config, out: str | Path, *, segments: str | Path | pl.DataFrame | None = None,
               progress: Any = None) -> UpliftResult:
    """``centile uplift``: compute and write the uplift tables atomically with a manifest."""
    from centile.backend import open_inputs
    from centile.features.compute import manifest
    from centile.io.outputs import staged_output, write_manifest

    seg = segments if isinstance(segments, pl.DataFrame) or segments is None else read_segments(segments)
    spec = parse_uplift_spec(cfg.section("uplift"))
    if spec.path:  # a flat results table: no other input is read
        from centile.io.outputs import build_manifest, fingerprint

        with staged_output(out) as staging:
            with staging.timed("uplift"):
                res = uplift_from_session(None, cfg, seg)
            rows = write_uplift(res, staging)
            write_manifest(staging, build_manifest(
                "uplift", as_of=None, inputs={"uplift": [fingerprint(Path(spec.path))]}, config=cfg.as_dict(),
                rows=rows, summary={"uplift": uplift_summary_doc(res)}))
            return replace(res, out=staging.target)
    with staged_output(out) as staging:
        with open_inputs(cfg, progress, only=("orders", "products", "contacts", "customers"),
                         spill=staging.spill) as s:
            if progress:
                progress("measuring uplift")
            with staging.timed("uplift"):
                res = uplift_from_session(s, cfg, seg, progress)
            rows = write_uplift(res, staging)
            write_manifest(staging, manifest(s, "uplift", {"uplift": uplift_summary_doc(res)}, rows))
        return replace(res, out=staging.target)
