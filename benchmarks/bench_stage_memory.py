"""Peak memory of single stages of ``centile run``, rerun over an existing run folder.

    python benchmarks/bench_stage_memory.py RUN_FOLDER --config run.toml --stages segments,baskets \
        --memory-limit 1600MB [--label after] [--results stage_memory]

``RUN_FOLDER`` is the output folder of an earlier ``centile run`` over the same inputs. It is copied
as hard links into a scratch folder beside it (the original is not changed), the named stages run
again in that copy with the inputs validated as in a full run, and every other stage is reused
from the copy whatever the code version (their outputs are inputs here, not what is measured).
Per stage: seconds and peak RSS (the manifest's ``peak_rss_mb``: VmHWM, reset at the stage's
start), plus the load average, appended under ``--label`` to ``benchmarks/results/<results>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, save  # noqa: E402

CHILD = """
import json, sys, time
import centile.pipeline.runner as runner
from centile.config import load_config
from centile.run import run_pipeline

cfg_path, out, stages, limit = sys.argv[1], sys.argv[2], set(sys.argv[3].split(",")), sys.argv[4]
prev = json.load(open(out + "/manifest.json"))["stages"]
keys = runner.stage_keys
salt = str(time.time())


def stage_keys(all_stages, cfg, fps, options):
    # the named stages get a new key (they run); every other one keeps its key in the folder (reused)
    k = keys(all_stages, cfg, fps, options)
    return {n: k[n] + salt if n in stages or n not in prev else prev[n]["key"] for n in k}


runner.stage_keys = stage_keys
res = run_pipeline(load_config(cfg_path, memory_limit=limit or None), out, report=False)
print(json.dumps({n: {"seconds": r.get("seconds"), "peak_rss_mb": r.get("peak_rss_mb")}
                  for n, r in res.stages.items() if r.get("status") == "ran"}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="output folder of an earlier centile run over the same inputs")
    ap.add_argument("--config", required=True, help="the run's config (TOML)")
    ap.add_argument("--stages", required=True, help="comma-separated stage names to rerun")
    ap.add_argument("--memory-limit", default="", help="e.g. 1600MB (default: none)")
    ap.add_argument("--label", default="now", help="the key the figures are stored under")
    ap.add_argument("--results", default="stage_memory", help="benchmarks/results/<name>.json")
    a = ap.parse_args()
    if not (a.run / "manifest.json").is_file():
        sys.exit(f"{a.run}: no manifest.json; give the output folder of a centile run")
    scratch = a.run.parent / f".{a.run.name}-stage-memory-{os.getpid()}"
    shutil.copytree(a.run, scratch, copy_function=os.link)
    try:
        load = os.getloadavg()
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", CHILD, a.config, str(scratch), a.stages, a.memory_limit],
                             check=True, capture_output=True, text=True)
        stages = json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    path = RESULTS / f"{a.results}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"machine": machine(), "runs": {}}
    doc["runs"][a.label] = {"run": str(a.run), "config": a.config, "memory_limit": a.memory_limit,
                            "stages": stages, "wall_s": round(time.perf_counter() - t0, 1),
                            "load_before": [round(x, 2) for x in load],
                            "load_after": [round(x, 2) for x in os.getloadavg()]}
    save(a.results, doc)
    for name, r in stages.items():
        print(f"{name}: {r['seconds']:.1f} s, peak {r['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
