"""``centile bench``: stage timings and peak memory of ``centile run`` against plain DuckDB baselines."""

from centile.bench.child import BenchError
from centile.bench.measure import BenchOptions, run_bench

__all__ = ["BenchError", "BenchOptions", "run_bench"]
