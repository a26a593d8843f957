"""The segments' per-customer steps (tasks run through ``backend.partitions.per_customer`` and
``reduce_customers``) as session work: on a cluster (``session.distributed()``) each
task gets its partition's rows of a customer frame (``PerCustomer``) and returns its customers'
labels or a mergeable state; here (or without a session) one call over every row. A step's
result is the same bytes either way: labels are computed row by row and put back in the frame's
row order (``__row``), states are exact (counts, exact sums) and merged in partition order.

Steps (their labels in the manifest's ``network`` record):

* ``segments: rules``: the rule segmentations whose SQL reads only the customer's own row (no
  window function, no subquery), evaluated by DuckDB over the partition's rows;
* ``segments: scaling``: exact moments of the cluster matrix's columns (their means and standard
  deviations over every customer);
* ``segments: clusters``: each customer's nearest k-means centre (the model fitted on the client,
  on its seeded sample);
* ``segments: profiles``: the profiles' sizes, exact sums and value counts
  (:func:`centile.segments.profiles.profiles_in_session`).
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import polars as pl

from centile.backend import local_sql
from centile.backend.partitions import ROW
from centile.errors import ConfigError


def columns(frame: pl.DataFrame, names: list[str] | tuple[str, ...]) -> pl.DataFrame:
    """``customer_id`` and ``names`` of ``frame`` (no copy of its other columns)."""
    keep = ["customer_id", *(c for c in names if c != "customer_id")]
    return pl.DataFrame([frame.get_column(c) for c in keep])


# ---------------------------------------------------------------------------
# the tasks (module level: they travel to the workers)

def evaluate_rules(rows: pl.DataFrame, sql: str) -> pl.DataFrame:
    """``SELECT __row, <sql> FROM rows`` in DuckDB, in ``__row`` order (the rule expressions)."""
    with local_sql({"base": rows}) as con:
        try:
            return con.sql(f"SELECT __row, {sql} FROM base ORDER BY __row").pl()
        except duckdb.Error as exc:
            raise ConfigError(f"[segments.rules]: {str(exc).splitlines()[0]}") from None


def rules_task(view: Any, part: int, rows: pl.DataFrame, sql: str) -> pl.DataFrame:
    """The rule expressions ``sql`` over the rows (``__row`` kept)."""
    return evaluate_rules(rows, sql)


def scaling_task(view: Any, part: int, rows: pl.DataFrame, cols: tuple[str, ...], fill: float | None) -> list:
    from centile.segments.clusters import matrix_moments

    return matrix_moments(rows, cols, fill)


def clusters_task(view: Any, part: int, rows: pl.DataFrame, scaling: Any, model: Any) -> pl.DataFrame:
    """The raw k-means label (nearest centre) of each row."""
    from threadpoolctl import threadpool_limits

    z = scaling.apply(rows)
    with threadpool_limits(1):  # one task per worker thread
        raw = model.predict(z).astype(np.int64) if z.shape[0] else np.zeros(0, np.int64)
    return pl.DataFrame({ROW: rows[ROW], "raw": raw})
