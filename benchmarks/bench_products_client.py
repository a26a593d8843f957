"""Issue 16: what validating the ``products`` table costs the client, by its size.

    python benchmarks/bench_products_client.py [--sizes 4000,1000000,10000000] [--formats parquet,csv]

On the Dask backend the client still validates ``products`` itself (its ``duplicate product_id``
rule needs every row of an id, across every file). This measures how large a products table gets
before that matters: for each size, a products table of that many distinct ids (generated into the
temp folder, kept), then in a fresh process the client's work on it alone: registering it
(counting its rows) and validating it into temporary tables, as ``open_session`` does. Prints and
stores (``benchmarks/results/products_client.json``) wall and CPU seconds and the peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, run_isolated, save  # noqa: E402

_VALIDATE = r"""
import json, sys, time
from types import MappingProxyType
from centile.config import load_config
from centile.backend.session import connect
from centile.backend.sources import count_rows, register_tables, stage_tables

toml = sys.argv[1]
cfg = load_config(toml, threads=1)
cfg = cfg.with_(tables=MappingProxyType({"products": cfg.tables["products"]}))
con = connect(cfg)
t0, c0 = time.perf_counter(), time.process_time()
tables, _ids = register_tables(con, cfg, count=False)
tables = {n: count_rows(con, r) for n, r in tables.items()}
stage_tables(con, tables)
valid = con.execute("SELECT count(*) FROM products_valid").fetchall()[0][0]
print(json.dumps({"seconds": round(time.perf_counter() - t0, 3), "validate_cpu_s": round(time.process_time() - c0, 3),
                  "rows": tables["products"].rows_after_filter, "valid": valid}))
"""


def write(n: int, fmt: str, folder: Path) -> Path:
    import duckdb

    path = folder / f"products-{n}.{fmt}"
    if not path.exists():
        tmp = path.with_name(path.name + ".tmp")
        opts = "FORMAT csv, HEADER" if fmt == "csv" else "FORMAT parquet"
        duckdb.connect().execute(
            f"COPY (SELECT i AS product_id, ['fashion', 'home', 'beauty', 'sports', 'toys'][1 + i % 5] AS category, "
            f"round(5 + (hash(i) % 10000) / 100.0, 2) AS list_price, round(5 + (hash(i + 1) % 10000) / 100.0, 2) "
            f"AS market_price, round(2 + (hash(i + 2) % 5000) / 100.0, 2) AS unit_cost FROM range(1, {n + 1}) t(i)) "
            f"TO '{tmp}' ({opts})")
        os.replace(tmp, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="4000,1000000,10000000")
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--orders", type=Path, default=Path("bench-data/c300000/orders"),
                    help="any order lines (the config needs some; they are not read)")
    a = ap.parse_args()
    folder = Path(tempfile.gettempdir()) / "centile-products-bench"
    folder.mkdir(exist_ok=True)
    rows = []
    for fmt in a.formats.split(","):
        for n in (int(x) for x in a.sizes.split(",")):
            path = write(n, fmt, folder)
            toml = folder / f"products-{n}-{fmt}.toml"
            toml.write_text(f'[tables.orders]\npath = "{a.orders.resolve()}"\n'
                            f'[tables.products]\npath = "{path}"\nformat = "{fmt}"\n')
            load0 = os.getloadavg()[0]
            r = run_isolated(_VALIDATE, str(toml))
            rows.append({"format": fmt, "products": n, "file_mb": round(path.stat().st_size / 1e6, 1),
                         "seconds": r["seconds"], "cpu_s": r["validate_cpu_s"], "process_cpu_s": round(r["cpu_s"], 2), "process_peak_rss_mb": r["peak_rss_mb"],
                         "valid": r["valid"], "load": [round(load0, 2), round(os.getloadavg()[0], 2)]})
            print(json.dumps(rows[-1]), flush=True)
    out = {"machine": machine(), "threads": 1, "command": " ".join(["python", *sys.argv]), "runs": rows}
    path = RESULTS / "products_client.json"
    if path.exists():
        out["earlier"] = {k: v for k, v in json.loads(path.read_text()).items() if k != "earlier"}
    save("products_client", out)


if __name__ == "__main__":
    main()
