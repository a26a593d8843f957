"""Cold-cache compile time: per kernel, and the first demo run.

    python benchmarks/bench_compile.py [--demo-config engine/examples/demo.toml] [--no-demo]

Every measurement runs in a fresh process with its own empty ``NUMBA_CACHE_DIR``, so numba
compiles everything it needs (nothing comes from a cache):

Compile times are given as wall time and as CPU time of the compiling process (numba
compiles on one thread): on a shared machine the CPU time is the figure to compare.

* ``kernels``: the public wrappers of the ranking, top-k and club kernels, called once on
  small inputs of the types the engine passes; per wrapper the seconds of its first call and
  the compile seconds per outermost numba dispatcher (numba's ``numba:compile`` events; a
  kernel compiled inside another one counts in the outer one).
* ``demo``: ``centile run -c <demo config> --out <tmp>`` in-process, with the same
  per-dispatcher compile clock, plus the process's wall time. The demo data must exist
  (``centile generate --customers 50000 --seed 7 --out demo/data``).

Writes ``benchmarks/results/compile.json``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, save  # noqa: E402

#: run first in every child: a compile clock per outermost dispatcher, printed as JSON at exit
_CLOCK = """
import json, sys, time
from collections import defaultdict
import numba.core.event as _ev

_compile = defaultdict(float)
_compile_cpu = defaultdict(float)
_starts = []

class _Listener(_ev.Listener):
    def on_start(self, event):
        _starts.append((time.perf_counter(), time.process_time()))
    def on_end(self, event):
        t0, c0 = _starts.pop()
        if not _starts:
            d = event.data["dispatcher"].py_func
            name = d.__module__.rsplit(".", 1)[-1] + "." + d.__name__
            _compile[name] += time.perf_counter() - t0
            _compile_cpu[name] += time.process_time() - c0

_ev.register("numba:compile", _Listener())
"""

_KERNELS = {
    "percentile.rank_pct": """
from centile.kernels.percentile import rank_pct
rank_pct(np.array([3.0, 1.0, np.nan, 3.0, 2.0]))
""",
    "percentile.rank_pct_many": """
from centile.kernels.percentile import rank_pct_many
m = np.asfortranarray(rng.random((200, 4)))
rank_pct_many(m)
rank_pct_many(m, groups=rng.integers(0, 3, 200))
""",
    "topk.topk": """
from centile.kernels.topk import topk
topk(rng.random((200, 2)), 10, hashes=rng.integers(0, 2**63, 200).astype(np.uint64))
""",
    "clubs.assign_priority": """
from centile.kernels.clubs import assign_priority
keys = [rng.random((300, 2)), rng.random((300, 1))]
assign_priority(keys, rng.integers(0, 2**63, 300).astype(np.uint64), np.array([[3, 10], [3, 10]]))
""",
    "clubs.assign_best_rank": """
from centile.kernels.clubs import assign_best_rank
from centile.kernels.percentile import rank_pct_many
vals = rng.random((300, 2))
_, pct = rank_pct_many(vals)
keys = [vals[:, :1], vals[:, 1:]]
assign_best_rank(keys, rng.integers(0, 2**63, 300).astype(np.uint64), np.array([[3, 10], [3, 10]]), pct.T)
""",
}


def _child(body: str, env_extra: dict[str, str] | None = None) -> dict:
    """Run ``body`` after the compile clock in a fresh process with an empty numba cache."""
    import json

    with tempfile.TemporaryDirectory(prefix="centile-numba-") as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, **(env_extra or {})}
        code = _CLOCK + body + ("\nprint(json.dumps({'compile': dict(_compile), 'compile_cpu': dict(_compile_cpu), "
                                "'first_call_s': _took, 'first_call_cpu_s': _took_cpu}))\n")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"benchmark step failed:\n{p.stderr[-3000:]}")
    doc = json.loads(p.stdout.strip().splitlines()[-1])
    for key in ("compile", "compile_cpu"):
        doc[key] = {k: round(v, 2) for k, v in sorted(doc[key].items())}
        doc[key + "_s"] = round(sum(doc[key].values()), 2)
    doc["first_call_s"] = round(doc["first_call_s"], 2)
    doc["first_call_cpu_s"] = round(doc["first_call_cpu_s"], 2)
    doc["wall_s"] = round(wall, 2)
    return doc


def kernel(name: str) -> dict:
    body = ("import numpy as np\nrng = np.random.default_rng(0)\n_t0, _c0 = time.perf_counter(), time.process_time()\n"
            + _KERNELS[name] + "\n_took, _took_cpu = time.perf_counter() - _t0, time.process_time() - _c0\n")
    return _child(body)


def demo(config: Path) -> dict:
    out = tempfile.mkdtemp(prefix="centile-demo-out-")
    body = (
        "from centile.cli.app import app\n_t0, _c0 = time.perf_counter(), time.process_time()\n"
        f"try:\n    app(['run', '-c', {str(config)!r}, '--out', {out!r}, '--force'], standalone_mode=False)\n"
        "finally:\n    _took, _took_cpu = time.perf_counter() - _t0, time.process_time() - _c0\n")
    try:
        return _child(body)
    finally:
        import shutil

        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo-config", type=Path, default=Path("engine/examples/demo.toml"))
    ap.add_argument("--no-demo", action="store_true", help="measure the kernels only")
    ap.add_argument("--only", nargs="*", help="kernels to measure (default: all)")
    ap.add_argument("--name", default="compile", help="results file name (benchmarks/results/<name>.json)")
    ap.add_argument("--label", default="", help="what was measured (e.g. the commit), stored in the results")
    args = ap.parse_args()
    doc: dict = {"label": args.label, "machine": machine(), "load_before": os.getloadavg()[0], "kernels": {}}
    for name in args.only or _KERNELS:
        doc["kernels"][name] = r = kernel(name)
        print(f"{name:28s} first call {r['first_call_s']:6.2f} s, compiling {r['compile_s']:6.2f} s "
              f"(CPU {r['compile_cpu_s']:6.2f} s) {r['compile_cpu']}", flush=True)
    if not args.no_demo:
        doc["demo"] = r = demo(args.demo_config.resolve())
        print(f"demo run: {r['first_call_s']:.1f} s in the command, {r['wall_s']:.1f} s wall, "
              f"{r['compile_s']:.1f} s compiling (CPU {r['compile_cpu_s']:.1f} s)", flush=True)
        for k, v in sorted(r["compile_cpu"].items(), key=lambda kv: -kv[1]):
            print(f"  {k:45s} CPU {v:6.2f} s, wall {r['compile'][k]:6.2f} s")
    doc["load_after"] = os.getloadavg()[0]
    print(f"written {save(args.name, doc)}")


if __name__ == "__main__":
    main()
