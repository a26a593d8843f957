"""Issue 16: the client's CPU per stage of a Dask run, with the global figures from the customer
tables computed on the client (before) or on the workers (after).

    python benchmarks/bench_dask_global.py --before DIR [--customers 300000] [--data DIR] [--runs 2]
                                           [--memory-limit 2GB]

The figures are the category totals (features), the mean purchase value (clv), the item dictionary
(baskets, recommend), the late campaigns (uplift), the contact media (attribution, steering) and
steering's spend and responses: before, the client read every order line and contact for them.

``--before DIR``: a tree holding an earlier ``centile`` package (``DIR/centile``, with ``kernels``
and ``sql`` inside), put first on ``PYTHONPATH`` of the child and of its workers. Each run is a fresh
process starting its own LocalCluster (2 workers x 1 thread), the whole pipeline with a ``[steering]``
section, without the report, ``--force``; before and after alternate. Records per variant the
medians of the client's CPU seconds per stage and in all, the bytes the new steps sent back to the
client, and whether the two variants wrote the same bytes; stored under ``--key`` (default: the
customer count) in ``benchmarks/results/dask_global.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import alternate, machine, run_isolated, store  # noqa: E402

_RUN = r"""
import json, sys, time
from centile.config import load_config
from centile.run import run_pipeline

def main():
    import distributed
    toml, out, mem = sys.argv[1:4]
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", silence_logs=40)
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(2)
    c0 = time.process_time()
    t0 = time.perf_counter()
    res = run_pipeline(load_config(toml, memory_limit=mem or None, backend="dask",
                                   scheduler=cluster.scheduler_address), out, report=False, force=True)
    doc = {"run_s": round(time.perf_counter() - t0, 2), "client_cpu_s": round(time.process_time() - c0, 2),
           "stages": {k: v.get("cpu_s") for k, v in res.stages.items()},
           "steps": json.load(open(f"{out}/manifest.json"))["summary"]["backend"]["partitions"]}
    client.close()
    cluster.close()
    print(json.dumps(doc))

if __name__ == "__main__":
    main()
"""

#: the steps that compute the global figures on the workers (absent before)
STEPS = ("features: categories", "clv: mean value", "baskets: item dictionary", "recommend: item dictionary",
         "uplift: late campaigns", "attribution: media", "steering: media", "steering: spend", "steering: responses")


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--customers", type=int, default=300_000)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--memory-limit", default="2GB")
    ap.add_argument("--key")
    a = ap.parse_args()
    data = (a.data or Path("bench-data") / f"c{a.customers}").resolve()
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="bench-dask-global-", dir=".") as tmp:
        toml = Path(tmp) / "c.toml"
        toml.write_text(f'data = "{data}"\n[steering]\nglobal_budget = 50000.0\ncap = 4\ngap = 1\n')
        runs = alternate(a.before, a.runs, lambda v: run_isolated(_RUN, str(toml), str(Path(tmp) / v),
                                                                  a.memory_limit), load)
        identical = _digests(Path(tmp) / "before") == _digests(Path(tmp) / "after")

    def summary(rs: list[dict]) -> dict:
        stages = {k: statistics.median(r["stages"][k] or 0.0 for r in rs) for k in rs[0]["stages"]}
        return {"run_s": statistics.median(r["run_s"] for r in rs),
                "client_cpu_s": statistics.median(r["client_cpu_s"] for r in rs),
                "client_cpu_s_runs": [r["client_cpu_s"] for r in rs],
                "stage_client_cpu_s": {k: round(v, 2) for k, v in stages.items()},
                "stage_client_cpu_s_runs": [r["stages"] for r in rs],
                "new_steps": {k: {f: rs[-1]["steps"][k][f] for f in ("tasks", "bytes_to_client", "cpu_s", "open_s", "work_s", "wall_s")}
                              for k in STEPS if k in rs[-1]["steps"]}}

    doc = {"customers": a.customers, "data": str(data), "runs": a.runs, "memory_limit": a.memory_limit,
           "load": [round(x, 2) for x in (min(load), max(load))], "machine": machine(),
           "identical_parquet_outputs": identical, **{v: summary(rs) for v, rs in runs.items()}}
    store("dask_global", a.key or str(a.customers), doc)
    print(json.dumps(doc, indent=2))


if __name__ == "__main__":
    main()
