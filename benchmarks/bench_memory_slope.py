"""How peak memory of ``centile run`` grows with the customer count, per stage, under one memory limit.

    python benchmarks/bench_memory_slope.py --sizes 1000000,2000000 --memory-limit 2GB --label after \
        [--data-root bench-data] [--out-root /tmp/slope] [--budget-per-customer 0.5] [--project 10000000:12GB]

Each size runs ``centile run`` once in its own process over ``<data-root>/c<size>`` (made by ``centile
generate --customers <size> --seed 1``) with steering on (``[steering] global_budget`` = size x
``--budget-per-customer``, ``cap = 4``, ``gap = 1``, as the 10M run's config). Per stage it keeps the
manifest's ``peak_rss_mb`` (``VmHWM`` reset at the stage's start, so what earlier stages left resident
counts too), ``rss_start_mb`` and ``cpu_s``; for the run, its wall and CPU seconds and peak RSS, and the
load average. Then, per stage, the slope in MB per million customers between the smallest and the
largest size, and a projection ``peak(largest) + slope x (N - largest)`` to ``--project N:LIMIT``, where
DuckDB's share moves from half the measured limit to half of ``LIMIT`` (the share is a ceiling DuckDB
fills when it can, so the projection adds the difference of the two halves). Results go under
``--label`` into ``benchmarks/results/<results>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, save  # noqa: E402

HERE = Path(__file__).resolve().parent


def _bytes(text: str) -> int:
    t = text.strip().upper()
    for unit, mult in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10), ("B", 1)):
        if t.endswith(unit):
            return int(float(t[: -len(unit)]) * mult)
    return int(t)


def run_size(size: int, data_root: Path, out_root: Path, limit: str, budget: float, threads: int | None) -> dict:
    """One ``centile run`` at ``size`` customers; returns the stage records and the whole run's figures."""
    data = data_root / f"c{size}"
    if not data.is_dir():
        sys.exit(f"{data}: no such folder; make it with centile generate --customers {size} --seed 1 --out {data}")
    out_root.mkdir(parents=True, exist_ok=True)
    cfg = out_root / f"run{size}.toml"
    cfg.write_text(f'data = "{data.resolve()}"\n[steering]\nglobal_budget = {size * budget:.1f}\ncap = 4\ngap = 1\n')
    out = out_root / f"c{size}"
    cmd = [str(Path(sys.executable).parent / "centile"), "run", "-c", str(cfg), "--out", str(out),
           "--memory-limit", limit, "--force"]
    if threads:
        cmd += ["--threads", str(threads)]
    load = os.getloadavg()
    t0 = time.perf_counter()
    with open(out_root / f"c{size}.log", "w") as err:
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _pid, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"centile run at {size:,} customers failed; see {out_root / f'c{size}.log'}")
    man = json.loads((out / "manifest.json").read_text())
    stages = {n: {k: r.get(k) for k in ("seconds", "cpu_s", "peak_rss_mb", "rss_start_mb")}
              for n, r in man["stages"].items() if r.get("status") == "ran"}
    # the run resets VmHWM at each stage's start (clear_refs), and the kernel's ru_maxrss is that
    # high-water mark at exit: the last stage's peak, not the run's; the run's is the largest of both
    peak = max([usage.ru_maxrss / 1024, *(r["peak_rss_mb"] or 0 for r in stages.values())])
    return {"customers": size, "out": str(out), "command": " ".join(cmd), "wall_s": round(wall, 1),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mb": round(peak, 1),
            "ru_maxrss_mb": round(usage.ru_maxrss / 1024, 1),
            "stages": stages, "load_before": [round(x, 2) for x in load],
            "load_after": [round(x, 2) for x in os.getloadavg()]}


def slopes(runs: list[dict], limit: str, project: tuple[int, str] | None) -> dict:
    """Per stage: MB per million customers between the smallest and largest run, and the projection."""
    lo, hi = min(runs, key=lambda r: r["customers"]), max(runs, key=lambda r: r["customers"])
    dm = (hi["customers"] - lo["customers"]) / 1e6
    out = {}
    names = [n for n in hi["stages"] if n in lo["stages"]] + ["(run)"]
    for n in names:
        a = lo["peak_rss_mb"] if n == "(run)" else lo["stages"][n]["peak_rss_mb"]
        b = hi["peak_rss_mb"] if n == "(run)" else hi["stages"][n]["peak_rss_mb"]
        if a is None or b is None:
            continue
        row = {"peak_mb": {str(lo["customers"]): a, str(hi["customers"]): b},
               "slope_mb_per_million": round((b - a) / dm, 1)}
        if project:
            n_proj, lim = project
            duck = (_bytes(lim) - _bytes(limit)) / 2 / (1 << 20)
            row[f"projected_mb_at_{n_proj}"] = round(b + row["slope_mb_per_million"] * (n_proj - hi["customers"]) / 1e6
                                                     + duck)
        out[n] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,2000000", help="customer counts, comma-separated")
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--data-root", type=Path, default=HERE.parent / "bench-data")
    ap.add_argument("--out-root", type=Path, default=Path("/tmp/centile-slope"))
    ap.add_argument("--budget-per-customer", type=float, default=0.5, help="steering global_budget per customer")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--project", default="10000000:12GB", help="N:LIMIT to project the peak to ('' for none)")
    ap.add_argument("--label", default="now")
    ap.add_argument("--note", default="")
    ap.add_argument("--results", default="memory_slope", help="benchmarks/results/<name>.json")
    a = ap.parse_args()
    sizes = sorted(int(s) for s in a.sizes.split(",") if s.strip())
    if len(sizes) < 2:
        sys.exit("--sizes: give at least two customer counts, e.g. 1000000,2000000")
    project = None
    if a.project:
        n, lim = a.project.split(":")
        project = (int(n), lim)
    runs = []
    for size in sizes:
        r = run_size(size, a.data_root, a.out_root / a.label.replace(" ", "_"), a.memory_limit,
                     a.budget_per_customer, a.threads)
        print(f"{size:,} customers: {r['wall_s']:.0f} s, {r['cpu_s']:.0f} CPU s, peak {r['peak_rss_mb']:,.0f} MB",
              flush=True)
        runs.append(r)
    sl = slopes(runs, a.memory_limit, project)
    path = RESULTS / f"{a.results}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"machine": machine(), "runs": {}}
    doc["runs"][a.label] = {"memory_limit": a.memory_limit, "sizes": sizes, "runs": runs, "slopes": sl,
                            "note": a.note}
    save(a.results, doc)
    for n, row in sl.items():
        proj = next((v for k, v in row.items() if k.startswith("projected")), None)
        print(f"{n:>12}: {' / '.join(f'{v:,.0f}' for v in row['peak_mb'].values())} MB, "
              f"slope {row['slope_mb_per_million']:,.0f} MB per million" + (f", projected {proj:,} MB" if proj else ""))


if __name__ == "__main__":
    main()
