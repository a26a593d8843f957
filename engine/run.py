"""``centile run``: every stage the inputs allow, in dependency order, into one output folder.

Stages: features → clv → clubs (ranks) → segments → clv_groups → uplift → report. Each stage
declares the input tables and config it reads; its *key* is a hash of those
inputs' fingerprints, that config, the keys of the stages it builds on and the
centile version. When ``out`` already holds a run whose manifest records the
same key for a stage, the stage's files are reused instead of recomputed.

The run is atomic: everything is written into a temporary folder beside
``out``, which replaces ``out`` in one rename only when every stage succeeded.
A failed or killed run leaves the previous results untouched and no partial
files behind (a leftover ``.<out>.centile-tmp-*`` of a killed run is removed
by the next run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from centile import __version__
from centile.config import Config
from centile.errors import OutputError
from centile.io.outputs import Staging, fingerprint, versions

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class Context:
    """What the stages of one run share: config, the open session, staged outputs."""

    cfg: Config
    staging: Staging
    previous: Path | None
    progress: Progress | None
    session: Any = None
    frames: dict[str, pl.DataFrame] = field(default_factory=dict)
    summaries: dict[str, Any] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def say(self, msg: str) -> None:
        log.info(msg)
        if self.progress:
            self.progress(msg)

    def open(self) -> Any:
        """The validated inputs (opened once, on first use)."""
        if self.session is None:
            from centile.backend.session import open_session

            # validate only the tables some stage reads (touchpoints wait for attribution)
            read = tuple(dict.fromkeys(t for st in STAGES for t in st.tables))
            self.session = self._stack.enter_context(open_session(self.cfg, self.say, only=read))
        return self.session

    def frame(self, name: str) -> pl.DataFrame:
        """An output of an earlier stage of this run, e.g. ``frame("features")``."""
        if name not in self.frames:
            path = self.staging.tmp / f"{name}.parquet"
            if not path.exists():
                raise KeyError(name)
            self.frames[name] = pl.read_parquet(path)
        return self.frames[name]

    def has(self, name: str) -> bool:
        return name in self.frames or (self.staging.tmp / f"{name}.parquet").exists()

    def features(self) -> pl.DataFrame:
        """The feature table, with the CLV predictions (``clv_*`` columns) when that stage ran,
        so clubs and segments can rank and describe customers by them."""
        if "features+clv" not in self.frames:
            f = self.frame("features")
            if self.has("clv"):
                from centile.clv.compute import clv_features

                clv = clv_features(self.frame("clv")).with_columns(
                    pl.col("customer_id").cast(f.schema["customer_id"]))
                f = f.join(clv, on="customer_id", how="left", maintain_order="left")
            self.frames["features+clv"] = f
        return self.frames["features+clv"]


class StageSkipped(Exception):
    """Raised by a stage that cannot produce a meaningful result on these inputs (e.g. a
    model that does not fit): the run goes on, the stage is recorded as skipped with the reason."""


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    ``tables``: input tables it reads (their files go into its key);
    ``config``: the part of the config it depends on; ``after``: stages whose
    outputs it reads; ``skip``: a reason not to run (missing inputs) or None;
    ``run``: computes and writes into ``ctx.staging``, returns rows per file;
    ``uses``: stages whose outputs it reads when they ran (their keys go into
    its key, but it runs without them).
    """

    name: str
    tables: tuple[str, ...]
    after: tuple[str, ...]
    config: Callable[[Config], Any]
    skip: Callable[[Context], str | None]
    run: Callable[[Context], dict[str, int]]
    uses: tuple[str, ...] = ()


def _stage_features(ctx: Context) -> dict[str, int]:
    from centile.features.compute import write_features

    s = ctx.open()
    res = write_features(s, ctx.staging, ctx.say)
    ctx.frames["features"] = res.features
    ctx.summaries["inputs"] = res.summary
    return {"features": res.features.height, "rejects": s.total_rejects}


def _stage_clubs(ctx: Context) -> dict[str, int]:
    from centile.clubs.compute import clubs_summary_doc, form_clubs, write_clubs

    res = form_clubs(ctx.features(), ctx.cfg, previous=ctx.previous)
    ctx.frames.update(clubs=res.clubs, club_summary=res.summary, ranks=res.ranks)
    ctx.summaries["clubs"] = clubs_summary_doc(res)
    ctx.notes.extend(f"clubs: {n}" for n in res.notes)
    return write_clubs(res, ctx.staging)


def _always(ctx: Context) -> str | None:
    return None


def _stage_clv(ctx: Context) -> dict[str, int]:
    from centile.clv.compute import clv_settings, clv_summary_doc, compute_clv, write_clv
    from centile.clv.models import FitError

    try:
        res = compute_clv(ctx.open(), clv_settings(ctx.cfg), progress=ctx.say)
    except FitError as exc:
        raise StageSkipped(f"the customer-value model did not fit: {exc}") from None
    ctx.frames["clv"] = res.customers
    ctx.summaries["clv"] = clv_summary_doc(res)
    ctx.notes.extend(f"clv: {n}" for n in res.notes)
    return write_clv(res, ctx.staging)


def _stage_clv_groups(ctx: Context) -> dict[str, int]:
    from centile.clv.compute import group_table

    groups = []
    if ctx.has("clubs"):
        groups.append(ctx.frame("clubs").select("customer_id", "club"))
    if ctx.has("segments") and "rfm_segment" in ctx.frame("segments").columns:
        groups.append(ctx.frame("segments").select("customer_id", "rfm_segment"))
    if not groups:
        raise StageSkipped("no clubs or segments to aggregate by")
    table = group_table(ctx.frame("clv"), groups)
    table.write_parquet(ctx.staging.path("clv_groups.parquet"), compression="zstd")
    return {"clv_groups": table.height}


def _config_part(*keys: str) -> Callable[[Config], Any]:
    def part(cfg: Config) -> Any:
        d = cfg.as_dict()
        return {k: d.get(k) for k in keys} | {"sections": {k: d["sections"].get(k) for k in keys}}
    return part


#: the feature job's view of the config (tables, windows, as_of, strictness)
_FEATURES_CONFIG = _config_part("as_of", "strict", "windows_days", "top_categories", "tables")

STAGES: list[Stage] = [
    Stage("features", ("orders", "products", "email_events", "customers"), (), _FEATURES_CONFIG,
          _always, _stage_features),
    Stage("clv", ("orders",), ("features",), _config_part("as_of", "strict", "tables", "clv"),
          _always, _stage_clv),
    Stage("clubs", (), ("features",), _config_part("clubs", "strategy", "group_by", "seed"),
          _always, _stage_clubs, uses=("clv",)),
]


def _register_job_stages() -> None:
    """The later jobs, in dependency order after features and clubs."""
    from centile.segments import compute as segments
    from centile.uplift import compute as uplift

    register_stage(segments.pipeline_stage())
    register_stage(Stage("clv_groups", (), ("clv",), lambda cfg: None, _always, _stage_clv_groups,
                         uses=("clubs", "segments")))
    register_stage(uplift.pipeline_stage())


def register_stage(stage: Stage) -> None:
    """Add (or replace) a stage; later jobs plug themselves into ``centile run`` this way."""
    for i, s in enumerate(STAGES):
        if s.name == stage.name:
            STAGES[i] = stage
            return
    STAGES.append(stage)


_register_job_stages()


# ---------------------------------------------------------------------------
# keys, reuse and the atomic folder swap

def _digest(doc: Any) -> str:
    return hashlib.blake2b(json.dumps(doc, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def input_fingerprints(cfg: Config) -> dict[str, list[dict[str, Any]]]:
    """Fingerprints of every configured input file, without validating anything."""
    import duckdb

    from centile.backend.sources import input_files

    con = duckdb.connect(":memory:")
    try:
        return {name: [fingerprint(Path(f)) for f in input_files(con, spec)] for name, spec in cfg.tables.items()}
    finally:
        con.close()


def code_fingerprint() -> str:
    """A hash of centile's own code (engine, kernels, SQL): a changed installation never reuses
    outputs of another, even at the same version number."""
    h = hashlib.blake2b(digest_size=12)
    root = Path(__file__).resolve().parent
    from centile import kernels, sql

    for folder in (root, Path(kernels.__file__).resolve().parent, Path(sql.__path__[0]).resolve()):
        for f in sorted(folder.rglob("*.py")) + sorted(folder.rglob("*.sql")):
            h.update(f.relative_to(folder).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def _stage_keys(cfg: Config, fps: dict[str, list[dict[str, Any]]]) -> dict[str, str]:
    keys: dict[str, str] = {}
    code = code_fingerprint()
    for st in STAGES:
        inputs = {t: [(f["path"], f["bytes"], f["fingerprint"]) for f in fps.get(t, [])] for t in st.tables}
        keys[st.name] = _digest({"stage": st.name, "version": __version__, "code": code, "inputs": inputs,
                                 "config": st.config(cfg),
                                 "after": [keys.get(a) for a in (*st.after, *st.uses)]})
    return keys


def _previous_manifest(out: Path) -> dict[str, Any]:
    try:
        doc = json.loads((out / "manifest.json").read_text())
        return doc if doc.get("job") == "run" else {}
    except (OSError, ValueError):
        return {}


def _reusable(prev_dir: Path, rec: dict[str, Any], key: str) -> bool:
    """Did the run in ``prev_dir`` compute this stage with the same key, and are its files there?"""
    files = rec.get("files") or []
    return (rec.get("key") == key and rec.get("status") in ("ran", "reused") and bool(files)
            and all((prev_dir / f).is_file() for f in files))


def _link_files(prev_dir: Path, files: list[str], staging: Staging) -> None:
    """Hard-link (or copy, across file systems) a previous run's files into the staging folder."""
    for f in files:
        dest = staging.path(f)
        try:
            os.link(prev_dir / f, dest)
        except OSError:
            shutil.copy2(prev_dir / f, dest)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Staging]:
    """A temporary folder beside ``out`` that replaces ``out`` whole when the block succeeds."""
    out = out.resolve()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out.parent}: {exc.strerror}; choose a writable --out folder") from None
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file; pass a folder")
    for stale in out.parent.glob(f".{out.name}.centile-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left behind by a killed run
    tmp = out.parent / f".{out.name}.centile-tmp-{os.getpid()}"
    tmp.mkdir()
    staging = Staging(target=out, tmp=tmp)
    try:
        yield staging
        if not out.exists():
            os.replace(tmp, out)
        elif _exchange(tmp, out):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous run
        else:
            old = out.parent / f".{out.name}.centile-old-{os.getpid()}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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


# ---------------------------------------------------------------------------
# the job

@dataclass(frozen=True)
class PipelineResult:
    """What ``run_pipeline`` did: one record per stage, and where the results are."""

    out: Path
    stages: dict[str, dict[str, Any]]
    rows: dict[str, int]
    summaries: dict[str, Any]
    seconds: float
    report: Path | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "seconds": round(self.seconds, 3), "stages": self.stages,
                "rows": self.rows, "report": str(self.report) if self.report else None,
                "notes": list(self.notes)}


def run_pipeline(cfg: Config, out: str | Path, *, force: bool = False, previous: str | Path | None = None,
                 progress: Progress | None = None, report: bool = True) -> PipelineResult:
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

    Returns
    -------
    PipelineResult
        Per stage: ``status`` (ran, reused, skipped), ``reason`` when skipped,
        ``key``, ``seconds``, ``files``.
    """
    from centile.clubs.compute import numba_threads

    t0 = time.perf_counter()
    out = Path(out)
    fps = input_fingerprints(cfg)
    keys = _stage_keys(cfg, fps)
    prev_doc = {} if force else _previous_manifest(out)
    records: dict[str, dict[str, Any]] = {}
    with staged_folder(out) as staging, _log_file(staging.path("centile.log")), numba_threads(cfg.threads):
        ctx = Context(cfg, staging, Path(previous) if previous else None, progress)
        with ctx._stack:
            for st in STAGES:
                missing = [a for a in st.after if records.get(a, {}).get("status") not in ("ran", "reused")]
                prev_rec = (prev_doc.get("stages") or {}).get(st.name) or {}
                # club stability against --previous depends on that folder, so never reuse clubs then
                reusable = _reusable(out, prev_rec, keys[st.name]) and not (st.name == "clubs" and previous)
                if missing:
                    reason = f"needs {', '.join(missing)}"
                elif prev_rec.get("key") == keys[st.name] and prev_rec.get("status") == "skipped":
                    reason = prev_rec.get("reason")  # same inputs and config: skipped again, no need to look
                else:
                    reason = None if reusable else st.skip(ctx)
                if reason:
                    records[st.name] = {"status": "skipped", "reason": reason, "key": keys[st.name]}
                    ctx.notes.append(f"{st.name}: skipped ({reason})")
                    log.info("stage %s skipped: %s", st.name, reason)
                    continue
                before = set(_files(staging))
                summaries_before = set(ctx.summaries)
                t1 = time.perf_counter()
                if reusable:
                    _link_files(out, prev_rec["files"], staging)
                    rows, status = dict(prev_rec.get("rows") or {}), "reused"
                    ctx.say(f"{st.name}: unchanged inputs, reusing {out}/")
                    ctx.summaries.update({k: prev_doc.get("summary", {}).get(k)
                                          for k in prev_rec.get("summary_keys", [])})
                else:
                    ctx.say(f"{st.name}: running")
                    try:
                        rows = st.run(ctx)
                    except StageSkipped as exc:
                        for f in set(_files(staging)) - before:
                            (staging.tmp / f).unlink()  # nothing half-written survives a skipped stage
                        records[st.name] = {"status": "skipped", "reason": str(exc), "key": keys[st.name]}
                        ctx.notes.append(f"{st.name}: skipped ({exc})")
                        log.warning("stage %s skipped: %s", st.name, exc)
                        continue
                    status = "ran"
                secs = round(time.perf_counter() - t1, 3)
                files = sorted(set(_files(staging)) - before - {"centile.log"})
                records[st.name] = {"status": status, "key": keys[st.name], "seconds": secs,
                                    "files": files, "rows": rows,
                                    "summary_keys": sorted(set(ctx.summaries) - summaries_before)}
                ctx.rows.update(rows)
                log.info("stage %s %s in %.2f s: %s", st.name, status, secs, ", ".join(files))
            as_of = ctx.session.as_of.isoformat() if ctx.session is not None else prev_doc.get("as_of")
            summary = dict(ctx.summaries)
            manifest = {
                "job": "run",
                "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "as_of": as_of,
                "inputs": fps,
                "config": cfg.as_dict(),
                "stages": records,
                "rows": ctx.rows,
                "notes": ctx.notes,
                "summary": summary,
                "versions": versions(),
                "timings_s": {k: r.get("seconds") for k, r in records.items() if "seconds" in r},
            }
            staging.path("manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
            report_path = None
            if report:
                from centile.report.page import write_report

                ctx.say("report: rendering report.html")
                report_path = write_report(staging.tmp, staging.path("report.html"), cfg, name=str(out))
        seconds = time.perf_counter() - t0
        log.info("run finished in %.2f s", seconds)
    return PipelineResult(out.resolve(), records, dict(ctx.rows), summary, seconds,
                          out.resolve() / "report.html" if report_path else None, tuple(ctx.notes))


def _files(staging: Staging) -> list[str]:
    return [p.name for p in staging.tmp.iterdir() if p.is_file()]
