"""The scaling table of issue 12: ``centile bench`` at 1M, 2M and 5M customers.

    python benchmarks/bench_run.py [--sizes 1000000 2000000 5000000] [--runs 3] [--threads N]
                                   [--memory-limit 8GB] [-- RUN_OPTIONS...]

For each size it uses ``bench-data/c<N>`` (``centile generate --seed 1``; generated there when
absent and kept for later runs), runs ``centile bench --data bench-data/c<N> --json`` (every stage
of ``centile run``, the features and clubs baselines, alternated in fresh processes; medians of
``--runs``) and stores the document under its size in ``benchmarks/results/scaling.json`` (sizes
not rerun keep their earlier entry). Prints a markdown table: seconds and peak RSS per stage per
size, the whole run, and the two baseline ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, save  # noqa: E402

CENTILE = [sys.executable, "-c", "import sys; sys.argv[0] = 'centile'; from centile.cli import main; main()"]


def _label(n: int) -> str:
    return f"{n / 1e6:g}M" if n >= 1_000_000 else f"{n / 1e3:g}k"


def table(sizes: dict[str, dict]) -> str:
    """The markdown scaling table over the stored documents (ordered by size): per size the wall
    seconds, the CPU seconds (user + system of every thread; on a shared machine the wall time also
    counts the waits for a core) and the peak RSS."""
    order = sorted(sizes, key=int)
    docs = [sizes[k] for k in order]
    head = "| step | " + " | ".join(f"{_label(int(k))}: s | CPU s | peak GB" for k in order) + " |"
    rule = "| --- |" + " ---: | ---: | ---: |" * len(order)
    rows = [head, rule]

    def num(v, spec) -> str:
        return format(v, spec) if v is not None else ""

    def cell(d: dict) -> str:
        mb = d.get("peak_rss_mb")
        return " | ".join([num(d.get("seconds"), ".1f"), num(d.get("cpu_s"), ".1f"),
                           num(mb / 1024 if mb is not None else None, ".2f")])

    def ratio(d: dict, key: str) -> str:
        wall, cpu = d["ratios"][key], (d.get("ratios_cpu") or {}).get(key)
        return f"{wall:.2f}x | {num(cpu, '.2f') + 'x' if cpu else ''} | "

    rows.append("| order lines | " + " | ".join(f"{d['order_lines'] / 1e6:.1f}M | | " for d in docs) + " |")
    names = list(dict.fromkeys(n for d in docs for n in d["stages"]))
    for name in names:
        cells = []
        for d in docs:
            s = d["stages"].get(name, {})
            cells.append(cell(s) if s.get("seconds") is not None else f"{s.get('status', '')} | | ")
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    rows.append("| **centile run, whole process** | " + " | ".join(cell(d["run"]) for d in docs) + " |")
    rows.append("| features baseline (bare GROUP BY scans) | "
                + " | ".join(cell(d["baselines"]["features"]) for d in docs) + " |")
    rows.append("| features stage / baseline | " + " | ".join(ratio(d, "features") for d in docs) + " |")
    rows.append("| `centile clubs`, end to end | " + " | ".join(cell(d["centile_clubs"]) for d in docs) + " |")
    rows.append("| plain DuckDB clubs script | " + " | ".join(cell(d["baselines"]["clubs"]) for d in docs) + " |")
    rows.append("| `centile clubs` / script | " + " | ".join(ratio(d, "clubs") for d in docs) + " |")
    rows.append("| load average (start, end) | " + " | ".join(
        f"{d['load']['start'][0]:.1f}, {d['load']['end'][0]:.1f} | | " for d in docs) + " |")
    return "\n".join(rows)


def main() -> None:
    argv = sys.argv[1:]
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 2_000_000, 5_000_000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--memory-limit", default=None)
    ap.add_argument("--table-only", action="store_true", help="print the table of the stored results only")
    args = ap.parse_args(argv)
    path = RESULTS / "scaling.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    sizes: dict[str, dict] = dict(stored.get("sizes", {}))
    if not args.table_only:
        for n in args.sizes:
            data = Path("bench-data") / f"c{n}"
            if not (data / "orders").exists():
                print(f"generating {n:,} customers into {data} ...", file=sys.stderr)
                subprocess.run([*CENTILE, "generate", "--customers", str(n), "--seed", "1", "--out", str(data)],
                               check=True)
            cmd = ["bench", "--data", str(data), "--runs", str(args.runs), "--json"]
            cmd += ["--threads", str(args.threads)] if args.threads else []
            cmd += ["--memory-limit", args.memory_limit] if args.memory_limit else []
            tail = ["--", *extra] if extra else []
            print(f"centile {' '.join(cmd + tail)}", file=sys.stderr)
            partial = Path("bench-data") / f"scaling-{n}.partial.json"
            partial.unlink(missing_ok=True)
            r = subprocess.run([*CENTILE, *cmd, "--out-json", str(partial), *tail], stdout=subprocess.DEVNULL,
                               text=True, env=dict(os.environ))
            if r.returncode != 0 and not partial.exists():
                sys.exit(f"centile bench at {n:,} customers failed (exit {r.returncode})")
            # the document is read from the file centile bench writes after every round (not its stdout,
            # which a child process may also print to): a failed later round (e.g. killed for memory on
            # a shared machine) keeps the rounds before it
            doc = json.loads(partial.read_text())
            doc["command"] = f"centile {' '.join(cmd + tail)}"
            if r.returncode != 0:
                doc["incomplete"] = f"a later round failed (exit {r.returncode}); {doc['runs']} of {args.runs} rounds"
            sizes[str(n)] = doc
            save("scaling", {"benchmark": "scaling", "sizes": sizes, "machine": machine()})
    print(table(sizes))


if __name__ == "__main__":
    main()
