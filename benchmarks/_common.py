"""Shared helpers for the benchmarks: isolated timed runs, medians, JSON results."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# run first in every child: at exit it reports the peak RSS of the child's own address space
from centile.bench.child import PEAK as _PEAK

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"



def run_isolated(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python process; it must print one JSON object on its last line.

    Returns that object plus ``wall_s`` (whole process), ``cpu_s`` (its CPU seconds) and ``peak_rss_mb``: the child's
    own peak resident set size, ``VmHWM`` of its address space after exec. (``ru_maxrss``
    from ``os.wait4`` is not used where ``/proc`` exists: Linux counts into it the pages the
    child shared with this parent between fork and exec, so a parent holding generated data
    inflated every figure to the parent's size.)
    """
    import os

    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, "-c", _PEAK + code, *args], stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if p.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{stderr[-3000:]}")
    doc = json.loads(stdout.strip().splitlines()[-1])
    doc["wall_s"] = wall
    doc["cpu_s"] = usage.ru_utime + usage.ru_stime  # the child's user + system CPU, all threads
    hwm = [int(line.split()[1]) for line in stderr.splitlines() if line.startswith("__centile_vmhwm_kb__ ")]
    doc["peak_rss_mb"] = round((hwm[-1] if hwm else usage.ru_maxrss) / 1024, 1)
    return doc


def median_of(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def machine() -> dict:
    import os

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}


def save(name: str, doc: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def store(name: str, key: str, doc: dict) -> Path:
    """``doc`` under ``key`` in ``results/<name>.json``, the other keys kept."""
    path = RESULTS / f"{name}.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[key] = doc
    return save(name, stored)


def alternate(before: str, runs: int, run: Callable[[str], dict], load: list[float]) -> dict[str, list[dict]]:
    """``run("before")`` with the tree ``before`` (holding an earlier ``centile`` package) first on
    ``PYTHONPATH``, then ``run("after")`` with this one, ``runs`` times; each run's result by variant,
    the load average appended to ``load`` after each. The environment is restored at the end."""
    import os

    env = dict(os.environ)
    out: dict[str, list[dict]] = {"before": [], "after": []}
    try:
        for _ in range(runs):
            for v in ("before", "after"):
                os.environ.clear()
                os.environ.update(env)
                if v == "before":
                    os.environ["PYTHONPATH"] = before + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                                         else "")
                out[v].append(run(v))
                load.append(os.getloadavg()[0])
    finally:
        os.environ.clear()
        os.environ.update(env)
    return out


#: the initial load of a refresh benchmark's state: every order file of ``files`` ingested into ``state``
#: (appended to a script that defines ``cfg()``, ``state`` and ``files``); prints its time and watermark
REFRESH_LOAD = r"""
from centile.refresh import ingest
t0, c0 = time.perf_counter(), time.process_time()
res = ingest(cfg(), state, files)
print(json.dumps({"seconds": time.perf_counter() - t0, "load_cpu_s": time.process_time() - c0,
                  "watermark": res.watermark.isoformat(), "lines": res.rows["orders"]}))
"""


def refresh_state(work: Path, load_code: str, data: Path, memory_limit: str, keep: bool) -> tuple[dict, bool]:
    """The refresh state ``work/state`` built by ``load_code`` (its load figures in ``work/load.json``),
    or, with ``keep`` and both there, the one a previous run left. Returns the load figures and
    whether the state was reused."""
    import shutil

    state, kept = work / "state", work / "load.json"
    if keep and kept.exists() and (state / "manifest.json").exists():
        return json.loads(kept.read_text()), True
    shutil.rmtree(state, ignore_errors=True)
    load = run_isolated(load_code, str(data), str(state), memory_limit)
    kept.write_text(json.dumps(load))
    return load, False
