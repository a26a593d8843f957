"""Regression test for issue 18 §9 (cold-cache compile time): the ranking, top-k, club and
recommendation kernels compile each internal kernel for one argument-type tuple.

numba compiles, optimises and emits a kernel -- and everything it calls -- again for every new
tuple of argument types, and a constant passed between kernels (``0``, ``False``, ``-1``) is a
*literal* type of its own. Literal arguments, a global array (typed read-only) and a typed
index array of another width each cost a full copy of the radix sort below the call; on a cold
cache that was most of the 20-45 s per kernel. Times are measured in
``benchmarks/bench_compile.py``; this test only counts the compiled versions, in a fresh process
with an empty numba cache (a cache hit would not compile the inner kernels at all).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHECK = """
import json
import numpy as np
from numba.core.registry import CPUDispatcher
from centile.kernels import clubs, percentile, recommend, topk

rng = np.random.default_rng(0)
n = 300
hashes = rng.integers(0, 2**63, n).astype(np.uint64)
vals = rng.random((n, 2))
vals[::7, 0] = np.nan
topk.topk(vals, 10, hashes=hashes)
topk.topk(vals[:, 0], 5, eligible=rng.random(n) < 0.5)
rank, pct = percentile.rank_pct_many(np.asfortranarray(vals), groups=rng.integers(0, 3, n))
percentile.rank_pct(vals[:, 1])
keys = [vals[:, :1], vals[:, 1:]]
sizes = np.array([[3, 10], [3, 10]])
clubs.assign_priority(keys, hashes, sizes)
clubs.assign_best_rank(keys, hashes, sizes, np.where(np.isnan(vals), np.nan, pct).T)
recommend.recommend([0, 2, 3], [0, 1, 2], [1.0, 1.0, 1.0], [0, 2, 3, 4], [1, 2, 0, 0], [0.5, 0.2, 0.9, 0.1],
                    3, 2)
out = {}
for mod in (percentile, topk, clubs, recommend):
    for name, d in vars(mod).items():
        if isinstance(d, CPUDispatcher) and d.py_func.__module__ == mod.__name__ and d.signatures:
            out[f"{mod.__name__.rsplit('.', 1)[1]}.{name}"] = [str(s) for s in d.signatures]
print(json.dumps(out))
"""

#: kernels with one compiled version per index width: the ranking sorts int32 row indices
#: (n < 2**31, half the memory traffic of int64); clubs, top-k and recommendations use int64
TWO_WIDTHS = {"percentile._radix_sort_range", "percentile._lsd", "percentile._insertion_sort"}


def test_issue18_each_kernel_compiles_for_one_type_tuple(tmp_path):
    p = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                       env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-3000:]
    sigs = json.loads(p.stdout.strip().splitlines()[-1])
    assert {"clubs._priority", "clubs._best_rank", "topk._top_sorted", "percentile._rank_row",
            "recommend._recommend"} <= set(sigs)
    for name, versions in sigs.items():
        allowed = 2 if name in TWO_WIDTHS else 1
        assert len(versions) <= allowed, f"{name} compiled {len(versions)} times: {versions}"
        assert not any("Literal" in v or "readonly" in v for v in versions), f"{name}: {versions}"
