"""Compilation flags shared by every kernel: one place, so they stay consistent.

fastmath never includes ``nnan``/``ninf``: the kernels rely on NaN checks.
``cache=True`` writes compiled machine code next to the module or, when that
is read-only (an installed wheel), to ``NUMBA_CACHE_DIR``; the CLI points that
at a user cache directory before the first kernel is imported.
"""

FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}
JIT = {"nogil": True, "cache": True, "fastmath": FASTMATH}
JIT_PARALLEL = {**JIT, "parallel": True}
