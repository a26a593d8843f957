"""User-supplied scored proposals (``[steering] proposals``) and budgets (``[steering] budgets``):
the plan computed from those alone, without order data, as commercial optimisers accept.

proposals: customer_id, medium, period (1..periods), value, cost -- one row per possible
contact. The kernel prices a medium once (integer cost units), so every proposal of a
medium must carry the same cost; differing costs are an InputError naming the medium.
budgets: customer_id, budget (currency). Without it a customer's budget is unlimited
(only the cap, the gap and the global budget bind). Customers without proposals get
no contacts; budget rows without proposals are listed with a budget but no plan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from centile.errors import InputError
from centile.steering.compute import NEVER, SteeringResult, plan_from_values
from centile.steering.settings import Medium, SteeringSettings

PROPOSAL_COLUMNS = {"customer_id": None, "medium": pl.String, "period": pl.Int64, "value": pl.Float64,
                    "cost": pl.Float64}


def read_table(path: Path, key: str, columns: dict[str, pl.DataType | None]) -> pl.DataFrame:
    """Read a Parquet or CSV file of ``[steering] key`` with the given columns (InputError otherwise)."""
    if not path.exists():
        raise InputError(f"[steering] {key} = {str(path)!r}: no such file; give the path of a Parquet or CSV file")
    try:
        df = pl.read_csv(path) if path.suffix.lower() == ".csv" else pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for unreadable files
        raise InputError(f"[steering] {key} = {str(path)!r}: cannot read it ({exc})") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"[steering] {key} = {str(path)!r}: missing column(s) {', '.join(missing)} (has "
                         f"{', '.join(df.columns)}); it needs {', '.join(columns)}")
    out = df.select(list(columns))
    for c, dtype in columns.items():
        if dtype is None:
            continue
        try:
            out = out.with_columns(pl.col(c).cast(dtype))
        except Exception:  # polars raises InvalidOperationError / ComputeError on a failed cast
            raise InputError(f"[steering] {key} = {str(path)!r}: column {c} is not {dtype}") from None
        bad = out[c].is_null() | (out[c].is_nan() if dtype == pl.Float64 else pl.Series([False] * out.height))
        if bad.any():
            raise InputError(f"[steering] {key} = {str(path)!r}: column {c} has {int(bad.sum())} missing or "
                             f"invalid values (first in row {int(bad.arg_true()[0]) + 1})")
    if out["customer_id"].is_null().any():
        raise InputError(f"[steering] {key} = {str(path)!r}: customer_id has missing values")
    return out


def plan_from_proposals(st: SteeringSettings, *, global_holdout: pl.Series | None = None) -> SteeringResult:
    """Plan from ``st.proposals`` (and ``st.budgets``); see the module docstring."""
    assert st.proposals is not None
    prop = read_table(st.proposals, "proposals", PROPOSAL_COLUMNS)
    bad = prop.filter((pl.col("period") < 1) | (pl.col("period") > st.periods))
    if bad.height:
        raise InputError(f"[steering] proposals: {bad.height} rows with a period outside 1..{st.periods} "
                         f"(first: {bad['period'][0]}); set [steering] periods or fix the table")
    if (prop["cost"] <= 0).any():
        raise InputError("[steering] proposals: every cost must be > 0")
    per = prop.group_by("medium").agg(lo=pl.col("cost").min(), hi=pl.col("cost").max()).sort("medium")
    differ = per.filter(pl.col("hi") - pl.col("lo") > 1e-9 * pl.col("hi"))
    if differ.height:
        m = differ.row(0, named=True)
        raise InputError(f"[steering] proposals: medium {m['medium']!r} has costs from {m['lo']:g} to {m['hi']:g}; "
                         "the planner prices a medium once, so give one cost per medium (or split the medium)")
    dup = prop.select("customer_id", "medium", "period").is_duplicated()
    if dup.any():
        raise InputError(f"[steering] proposals: {int(dup.sum())} duplicate (customer_id, medium, period) rows")
    configured = {m.name: m for m in st.media}
    media = tuple(configured.get(name, Medium(name, float(cost))) for name, cost in zip(
        per["medium"].to_list(), per["hi"].to_list(), strict=True))
    notes = ["plan from the proposals table (no order data)"]
    ids = prop["customer_id"].unique()
    budgets = None
    if st.budgets is not None:
        budgets = read_table(st.budgets, "budgets", {"customer_id": None, "budget": pl.Float64})
        if (budgets["budget"] < 0).any():
            raise InputError("[steering] budgets: every budget must be >= 0")
        if budgets["customer_id"].is_duplicated().any():
            raise InputError("[steering] budgets: duplicate customer_id rows")
        ids = pl.concat([ids, budgets["customer_id"].cast(ids.dtype)]).unique()
    ids = ids.sort()
    n, M, T = ids.len(), len(media), st.periods
    values = np.full((n, M, T), np.nan)
    row = pl.DataFrame({"customer_id": ids, "_i": np.arange(n)})
    p = prop.join(row, on="customer_id").with_columns(
        _m=pl.col("medium").replace_strict({m.name: j for j, m in enumerate(media)}, return_dtype=pl.Int64))
    values[p["_i"].to_numpy(), p["_m"].to_numpy(), p["period"].to_numpy() - 1] = p["value"].to_numpy()
    if global_holdout is not None:
        values[ids.is_in(global_holdout.implode()).to_numpy()] = np.nan
    if budgets is not None:
        b = row.join(budgets, on="customer_id", how="left")["budget"].fill_null(0.0)
        model = "budgets table"
    else:
        b = pl.Series([float(st.cap * max(m.cost for m in media))] * n)
        model = "unlimited (no budgets table)"
        notes.append("no [steering] budgets: customer budgets unlimited (cap x the dearest medium)")
    bt = pl.DataFrame({"customer_id": ids, "budget": b}).with_columns(
        budget_units=(pl.col("budget") / st.cost_unit * (1 + 1e-12)).floor().cast(pl.Int64), model=pl.lit(model))
    empty = pl.DataFrame(schema={"customer_id": ids.dtype, "medium": pl.String})
    return plan_from_values(ids, values, media, st, bt, np.full(n, NEVER, np.int64), empty,
                            pl.DataFrame(), notes, None, None)
