"""Compilation flags shared by every kernel: one place, so they stay consistent.

fastmath never includes ``nnan``/``ninf``: the kernels rely on NaN checks.
``cache=True`` writes compiled machine code next to the module or, when that
is read-only (an installed wheel), to numba's user-wide cache directory
(``NUMBA_CACHE_DIR`` when set). ``centile warmup`` fills the cache ahead of
the first run.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = {"nogil": True, "cache": True, "fastmath": FASTMATH}
JIT_PARALLEL = {**JIT, "parallel": True}
#: no fastmath: for kernels whose float results must not depend on where their buffers happen to lie
#: in memory (vectorised approximate functions and reassociated sums can differ in the last bits from
#: one call to the next on the same inputs; seen in the time-decay weights of attribution)
JIT_EXACT = {"nogil": True, "cache": True}
