"""Run stages in dependency order into one output folder, atomically, reusing unchanged stages.

The runner knows the stage contract only: it never names a stage. The whole
output folder is written into a temporary folder beside ``out`` that replaces
``out`` in one rename when every stage succeeded (:func:`centile.io.outputs.staged_folder`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centile import urls
from centile.backend import open_backend
from centile.backend.base import network_delta
from centile.backend.sources import input_fingerprints
from centile.config import Config
from centile.errors import OutputError
from centile.io.outputs import (
    Staging,
    build_manifest,
    fetch_previous,
    staged_folder,
    staged_url,
)
from centile.pipeline.dag import dependencies, order, producers
from centile.pipeline.keys import link_files, previous_manifest, reusable, stage_keys
from centile.pipeline.stage import Context, Stage, StageSkipped
from centile.runtime import Progress, numba_threads, peak_rss_mb, release_heap, rss_mb

log = logging.getLogger(__name__)

#: renders the report over the staged folder: (results folder, html path, cfg, name) -> path
ReportWriter = Callable[[Path, Path, Config, str], Path]


@dataclass(frozen=True)
class PipelineResult:
    """What ``run_pipeline`` did: one record per stage, and where the results are."""

    #: the output folder; for an output URL, the run's own prefix (``<url>/runs/<run id>``, text)
    out: Path | str
    stages: dict[str, dict[str, Any]]
    rows: dict[str, int]
    summaries: dict[str, Any]
    seconds: float
    report: Path | str | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 3), "stages": self.stages,
                "rows": self.rows, "report": str(self.report) if self.report else None,
                "notes": list(self.notes)}


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[None]:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("centile")
    before = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
        handler.close()


def _files(staging: Staging) -> list[str]:
    return [p.name for p in staging.tmp.iterdir() if p.is_file()]


def _evict(ctx: Context, keep: tuple[str, ...]) -> None:
    """Drop the in-memory frames the next stage does not read (``keep``): per-customer frames would
    otherwise pile up over the run, and a stage that only uses a frame optionally, or a few of its
    columns, reads them again from the file (:meth:`Context.frame_columns`). A frame is dropped only
    when it can be had again (its file, or its loader)."""
    gone = [f for f in ctx.frames if f not in keep
            and (f in ctx.loaders or (ctx.staging.tmp / f"{f}.parquet").exists())]
    for f in gone:
        del ctx.frames[f]
    # the stage's temporaries are gone too: give their pages back before the next stage starts
    release_heap()


def _wanted(keys: Mapping[str, str]) -> Callable[[dict[str, Any]], list[str]]:
    """The files of a previous run's stages whose keys equal this run's (what reuse would link)."""
    def files(doc: dict[str, Any]) -> list[str]:
        recs = doc.get("stages") or {}
        return [f for name, key in keys.items() for rec in [recs.get(name) or {}]
                if rec.get("key") == key and rec.get("status") in ("ran", "reused") for f in rec.get("files") or []]
    return files


def execute(stages: list[Stage], cfg: Config, out: str | Path, *, force: bool = False,
            options: Mapping[str, Any] | None = None, progress: Progress | None = None,
            report: ReportWriter | None = None, keep_runs: int = 0) -> PipelineResult:
    """Run ``stages`` (ordered from their declared frames) into ``out``; see :func:`centile.run.run_pipeline`."""
    t0 = time.perf_counter()
    url = str(out) if urls.is_url(str(out)) else None  # an object store: a new run prefix, then a pointer
    if url is None and urls.mangled(out):
        raise OutputError(f"--out {out}: looks like a URL whose '//' was lost; pass it as text (s3://bucket/prefix)")
    if keep_runs < 0 or (keep_runs and url is None):
        raise OutputError(f"--keep-runs {keep_runs}: applies to an output URL only (old runs under <url>/runs/), "
                          "as a number >= 1; a local --out folder holds one run")
    out = Path(out) if url is None else Path(tempfile.gettempdir()) / "centile-url-run"
    options = dict(options or {})
    stages = order(stages)
    made_by = producers(stages)
    fps = input_fingerprints(cfg.tables)
    keys = stage_keys(stages, cfg, fps, options)
    prev_doc = {} if force or url is not None else previous_manifest(out)
    prev_dir, prev_name = out, str(out)  # where the previous run's files are (for a URL: downloaded, below)
    records: dict[str, dict[str, Any]] = {}
    # validate only the tables some stage reads from the input files (over a refresh state, a stage
    # may read some from the state instead)
    state = options.get("refresh_state")
    served = {st.name: st.from_state(state) if state and st.from_state else () for st in stages}
    read = tuple(dict.fromkeys(t for st in stages for t in st.tables if t not in served[st.name]))
    elsewhere = tuple(dict.fromkeys(t for st in stages for t in st.tables if t not in read))
    backend = open_backend(cfg)
    position = {st.name: i for i, st in enumerate(stages)}
    with (staged_url(url, keep_runs) if url else staged_folder(out)) as staging, \
            _log_file(staging.path("centile.log")), numba_threads(cfg.threads):
        if url is not None and not force:  # the run LATEST names: its unchanged stages' files
            prev_dir = staging.target.parent / "previous"
            prev_doc, prev_url = fetch_previous(url, _wanted(keys), prev_dir, staging)
            prev_name = prev_url or url
        with contextlib.ExitStack() as stack:
            stack.enter_context(backend)  # a cluster connection (the dask backend), closed last
            ctx = Context(cfg, staging, options, progress,
                          open_inputs=lambda: stack.enter_context(backend.open(
                              only=read, progress=ctx.say, spill=staging.spill, elsewhere=elsewhere)))
            for st in stages:
                needs, _uses = dependencies(st, made_by)
                missing = [a for a in needs if records.get(a, {}).get("status") not in ("ran", "reused")]
                key = keys[st.name]
                prev_rec = (prev_doc.get("stages") or {}).get(st.name) or {}
                can_reuse = reusable(prev_dir, prev_rec, key)
                if missing:
                    reason = f"needs {', '.join(missing)}"
                elif prev_rec.get("key") == key and prev_rec.get("status") == "skipped":
                    reason = prev_rec.get("reason")  # same inputs and config: skipped again, no need to look
                else:
                    reason = None if can_reuse or st.skip is None else st.skip(ctx)
                if reason:
                    records[st.name] = {"status": "skipped", "reason": reason, "key": key}
                    ctx.notes.append(f"{st.name}: skipped ({reason})")
                    log.info("stage %s skipped: %s", st.name, reason)
                    continue
                before = set(_files(staging))
                summaries_before = set(ctx.summaries)
                peak_rss_mb(reset=True)
                rss_start = rss_mb()  # what earlier stages left resident: part of this stage's peak
                moved = backend.moved()
                t1, c1 = time.perf_counter(), time.process_time()
                if can_reuse:
                    link_files(prev_dir, prev_rec["files"], staging)
                    rows, status = dict(prev_rec.get("rows") or {}), "reused"
                    ctx.say(f"{st.name}: unchanged inputs, reusing {prev_name}/")
                    ctx.summaries.update({k: prev_doc.get("summary", {}).get(k)
                                          for k in prev_rec.get("summary_keys", [])})
                else:
                    ctx.say(f"{st.name}: running")
                    try:
                        rows = st.run(ctx)
                    except StageSkipped as exc:
                        for f in set(_files(staging)) - before:
                            (staging.tmp / f).unlink()  # nothing half-written survives a skipped stage
                        for f in st.frames:
                            ctx.frames.pop(f, None)
                        records[st.name] = {"status": "skipped", "reason": str(exc), "key": key}
                        ctx.notes.append(f"{st.name}: skipped ({exc})")
                        log.warning("stage %s skipped: %s", st.name, exc)
                        continue
                    status = "ran"
                ctx.loaders.update(st.derived)
                secs = round(time.perf_counter() - t1, 3)
                cpu = round(time.process_time() - c1, 3)  # every thread of this process, not the waits for a core
                files = sorted(set(_files(staging)) - before - {"centile.log"})
                records[st.name] = {"status": status, "key": key, "seconds": secs, "cpu_s": cpu, "files": files,
                                    "rows": rows,
                                    "summary_keys": sorted(set(ctx.summaries) - summaries_before),
                                    "peak_rss_mb": peak_rss_mb(), "rss_start_mb": rss_start}
                network = network_delta(moved, backend.moved())
                if network:  # a cluster: what this stage's per-partition steps moved
                    records[st.name]["network"] = network
                ctx.rows.update(rows)
                log.info("stage %s %s in %.2f s: %s", st.name, status, secs, ", ".join(files))
                nxt = position[st.name] + 1
                _evict(ctx, stages[nxt].reads if nxt < len(stages) else ())
            as_of = ctx.session.as_of.isoformat() if ctx.session is not None else prev_doc.get("as_of")
            summary = dict(ctx.summaries)
            summary["backend"] = backend.describe()
            manifest = build_manifest(
                "run", as_of=as_of, inputs=fps, config=cfg.as_dict(), stages=records, rows=ctx.rows,
                notes=ctx.notes, summary=summary,
                timings={k: r.get("seconds") for k, r in records.items() if "seconds" in r})
            listed = [f for r in records.values() for f in r.get("files") or []]
            missing = [f for f in listed if not (staging.tmp / f).is_file()]
            if missing:  # never publish a folder whose manifest lists files it does not hold
                raise RuntimeError(f"the run folder lacks {missing}, which its manifest lists")
            staging.path("manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            report_path = None
            if report is not None:
                ctx.say("report: rendering report.html")
                report_path = report(staging.tmp, staging.path("report.html"), cfg, url or str(out))
        seconds = time.perf_counter() - t0
        log.info("run finished in %.2f s", seconds)
    if url is not None:  # the run's own prefix, which <url>/LATEST now names
        return PipelineResult(staging.url, records, dict(ctx.rows), summary, seconds,
                              f"{staging.url}/report.html" if report_path else None, tuple(ctx.notes))
    return PipelineResult(out.resolve(), records, dict(ctx.rows), summary, seconds,
                          out.resolve() / "report.html" if report_path else None, tuple(ctx.notes))
