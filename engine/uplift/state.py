"""The uplift table's mergeable state: what one partition of units leaves behind.

A partition's unit table (one row per customer and campaign) is reduced to, per
(campaign, breakdown, segment, arm) cell:

* counts (``n``, the SRM check's input; ``listed``: rows with a non-zero
  bootstrapped outcome), the contact cost, and per outcome the sums ``s``, ``ss``
  and, with a pre-period column, ``sx``, ``sxx``, ``sxy`` (CUPED);
* the Poisson-bootstrap replicate sums of the listed rows, each row's weight
  keyed by (seed, replicate, customer, campaign) (``centile.kernels.bootstrap``);

and, only with an uplift ``score``, the few columns the Qini curves need
(customer id, arm, score and the outcomes as float64: about 60 MB per million
units with the four outcomes of contacts + orders), which need one global sort
by score and so are kept whole.

Integer and decimal columns (counts; money as DECIMAL(18, 4) from the session)
are summed exactly -- Python integers for the analytic sums (Int128 within a
partition), ``int64`` for the replicate sums -- so the merged state, and every
figure derived from it at the end, is the same for any partitioning and thread
count. Float columns (a flat results table, read whole) are summed in one
fixed order with ``np.bincount``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from centile.errors import ConfigError, InputError
from centile.uplift.inputs import PRE, UpliftSpec

#: a cell: (segment label, arm label)
Cell = tuple[str, str]
#: a breakdown of a campaign: (campaign, breakdown name)
Block = tuple[str, str]

MISSING = "(missing)"
#: at most this many joint (segment columns x arm) cells per campaign and partition are summed
#: once for every breakdown (the bootstrap's weights generated once); beyond, one pass per breakdown
JOINT_CELLS = 4096


def labels(col: pl.Series) -> pl.Series:
    """Segment or arm labels as text (null -> '(missing)')."""
    return col.cast(pl.String).fill_null(MISSING)


def _exact_scale(dtype: pl.DataType) -> int | None:
    """The decimal scale of an exactly summable column (integers: 0), None for floats."""
    if isinstance(dtype, pl.Decimal):
        return int(dtype.scale or 0)
    if dtype.is_integer() or dtype == pl.Boolean:
        return 0
    return None


def _physical(col: pl.Series) -> pl.Series:
    """Exact columns as integers in units of 10**-scale (Int128), floats as Float64; nulls as 0."""
    if isinstance(col.dtype, pl.Decimal):
        return col.to_physical().cast(pl.Int128).fill_null(0)
    if _exact_scale(col.dtype) == 0:
        return col.cast(pl.Int128).fill_null(0)
    return col.cast(pl.Float64).fill_null(0.0)


@dataclass(frozen=True)
class Plan:
    """What is fixed before the first partition: outcomes, breakdowns, bootstrapped columns, seeds."""

    outcomes: tuple[str, ...]
    pre: Mapping[str, str]  # outcome -> its pre-period column
    segments: tuple[str, ...]
    boot: tuple[str, ...]  # replicate-summed columns: bootstrap candidates and ratio parts
    seeds: np.ndarray  # one per replicate
    seed: int
    score: str | None
    campaigns: tuple[str, ...]

    @property
    def breakdowns(self) -> list[tuple[str, str | None]]:
        return [("overall", None)] + [(c, c) for c in self.segments]

    @property
    def boot_breakdowns(self) -> list[str]:
        """The breakdowns whose replicate sums are kept: every segment column (overall is the
        collapse of the last one), or overall alone."""
        return list(self.segments) or ["overall"]

    def stats(self) -> list[tuple[str, str | None, str | None]]:
        """The summed statistics: (name, column a, column b) for sum(a) or sum(a * b)."""
        out: list[tuple[str, str | None, str | None]] = [("cost", "cost", None)]
        for o in self.outcomes:
            out += [(f"{o}:s", o, None), (f"{o}:ss", o, o)]
            if o in self.pre:
                x = self.pre[o]
                out += [(f"{o}:sx", x, None), (f"{o}:sxx", x, x), (f"{o}:sxy", x, o)]
        return out


def _same_plan(a: Plan, b: Plan) -> bool:
    return (a.outcomes, dict(a.pre), a.segments, a.boot, a.seed, a.score, a.campaigns) == (
        b.outcomes, dict(b.pre), b.segments, b.boot, b.seed, b.score, b.campaigns) and np.array_equal(
        a.seeds, b.seeds)


def make_plan(schema: Mapping[str, pl.DataType], spec: UpliftSpec, seed: int,
              binary: Mapping[str, bool]) -> Plan:
    """The plan for unit tables of ``schema``; ``binary``: outcomes known to be 0/1 (only those
    are left out of the bootstrap candidates: the others are summed, and dropped at the end if
    they turn out 0/1 over every partition)."""
    from centile.kernels.bootstrap import replicate_seeds

    outcomes = tuple(c for c, t in schema.items() if c not in ("customer_id", "campaign", "arm", "cost")
                     and not c.startswith(PRE) and c not in spec.segments and c != spec.score
                     and t.is_numeric())
    for name, (num, den) in spec.ratios.items():
        if num not in outcomes or den not in outcomes:
            raise ConfigError(f"[uplift] ratio {name}: {num} and {den} must both be outcomes "
                              f"(have {', '.join(outcomes)})")
    if spec.replicates:
        cand = [o for o in spec.bootstrap if o in outcomes] if spec.bootstrap is not None else [
            o for o in outcomes if not binary.get(o, False)]
        boot = tuple(dict.fromkeys([*cand, *(c for pair in spec.ratios.values() for c in pair)]))
    else:
        boot = ()
    return Plan(outcomes, {o: PRE + o for o in outcomes if PRE + o in schema}, tuple(spec.segments), boot,
                replicate_seeds(seed, spec.replicates), seed, spec.score, tuple(spec.campaigns))


@dataclass
class UpliftState:
    """The merged state of the partitions added so far (see the module docstring)."""

    plan: Plan
    cells: dict[Block, dict[Cell, dict[str, Any]]] = field(default_factory=dict)
    boot: dict[Block, dict[Cell, np.ndarray]] = field(default_factory=dict)
    binary: dict[str, bool] = field(default_factory=dict)
    scales: dict[str, int | None] = field(default_factory=dict)
    qini: dict[str, list[pl.DataFrame]] = field(default_factory=dict)  # per campaign
    units: int = 0
    parts: int = 0
    sort_by_customer: bool = False  # the Qini units come from customer-hash partitions

    def add(self, units: pl.DataFrame) -> None:
        """Reduce one partition's unit table into the state (its rows may then be dropped)."""
        p = self.plan
        self.parts += 1
        self.units += units.height
        cols = ["cost", *p.outcomes, *p.pre.values()]
        for c in cols:
            sc = _exact_scale(units.schema[c])
            if self.scales.setdefault(c, sc) != sc:
                raise InputError(f"uplift: column {c} changed type between partitions "
                                 f"({units.schema[c]}); give it one type")
        for o in p.outcomes:
            ok = bool(units[o].cast(pl.Float64).fill_null(0.0).is_in([0.0, 1.0]).all())
            self.binary[o] = self.binary.get(o, True) and ok
        if units.height == 0:
            return
        for camp in labels(units["campaign"]).unique().sort().to_list():
            if p.campaigns and camp not in p.campaigns:
                continue
            u = units.filter(labels(pl.col("campaign")) == camp)
            self._add_campaign(camp, u)

    def merge(self, other: UpliftState) -> None:
        """Add the state of later partitions (``other``, reduced elsewhere, e.g. on a worker) as
        if its units had been added here: cells, replicate sums and Qini units in the order
        ``other`` met them, so merging partition states in partition order gives the state of
        adding the partitions in that order."""
        if not _same_plan(self.plan, other.plan):
            raise InputError("uplift: the partitions' unit tables differ in their columns; give every "
                             "column one type")
        self.parts += other.parts
        self.units += other.units
        for c, sc in other.scales.items():
            if self.scales.setdefault(c, sc) != sc:
                raise InputError(f"uplift: column {c} changed type between partitions; give it one type")
        for o, ok in other.binary.items():
            self.binary[o] = self.binary.get(o, True) and ok
        for key, cells in other.cells.items():
            block = self.cells.setdefault(key, {})
            for cell, sums in cells.items():
                acc = block.get(cell)
                if acc is None:
                    block[cell] = dict(sums)
                else:
                    for k, v in sums.items():
                        acc[k] += v
        for key, reps in other.boot.items():
            rb = self.boot.setdefault(key, {})
            for cell, arr in reps.items():
                if cell in rb:
                    rb[cell] += arr
                else:
                    rb[cell] = arr.copy()
        for camp, frames in other.qini.items():
            self.qini.setdefault(camp, []).extend(frames)

    def _add_campaign(self, camp: str, u: pl.DataFrame) -> None:
        p = self.plan
        phys = {c: _physical(u[c]) for c in dict.fromkeys(["cost", *p.outcomes, *p.pre.values()])}
        _check_range(phys, u.height)
        listed = np.zeros(u.height, bool)
        for c in p.boot:
            listed |= (phys[c] != 0).to_numpy()
        dense = [_dense(u[c]) for c in p.segments]
        arms = _dense(u["arm"])
        every = list(range(len(dense)))
        joint = _group([*dense, arms])
        if joint is not None and len(joint[1]) <= JOINT_CELLS:  # one pass serves every breakdown
            groupings = [(every, [b for b, _c in p.breakdowns], joint)]
        else:  # too many joint cells: one pass per breakdown
            groupings = [([i], [p.segments[i]], None) for i in every] + [([], ["overall"], None)]
        for cols, serves, grouped in groupings:
            code, rows = grouped or _group([*(dense[i] for i in cols), arms])
            sums = self._sums(code, len(rows), phys)
            sums["n"] = np.bincount(code, minlength=len(rows)).tolist()
            sums["listed"] = np.bincount(code[listed], minlength=len(rows)).tolist()
            boot = None
            if p.boot and p.seeds.size and any(b in p.boot_breakdowns for b in serves):
                boot = self._boot_sums(camp, u, code, len(rows), listed, phys)
            for bname in serves:
                pos = cols.index(p.segments.index(bname)) if bname != "overall" else None
                cells = [("all" if pos is None else r[pos], r[-1]) for r in rows]
                block = self.cells.setdefault((camp, bname), {})
                for j, cell in enumerate(cells):
                    acc = block.get(cell)
                    if acc is None:
                        block[cell] = {k: v[j] for k, v in sums.items()}
                    else:
                        for k, v in sums.items():
                            acc[k] += v[j]
                if boot is not None and bname in p.boot_breakdowns:
                    rb = self.boot.setdefault((camp, bname), {})
                    for j, cell in enumerate(cells):
                        if cell in rb:
                            rb[cell] += boot[:, j, :]
                        else:
                            rb[cell] = boot[:, j, :].copy()
        if p.score:
            self.qini.setdefault(camp, []).append(u.select(
                "customer_id", labels(pl.col("arm")).alias("arm"), pl.col(p.score).cast(pl.Float64).alias("score"),
                *(pl.Series(o, self.floats(o, phys[o])) for o in p.outcomes)))

    def qini_units(self, camp: str) -> pl.DataFrame:
        """A campaign's Qini columns over every partition; from customer-hash partitions
        (``sort_by_customer``) in customer order, as one pass over all customers lists them."""
        parts = self.qini.get(camp, [])
        units = pl.concat(parts, how="vertical") if len(parts) != 1 else parts[0]
        return units.sort("customer_id", maintain_order=True) if self.sort_by_customer else units

    def floats(self, col: str, values: pl.Series) -> np.ndarray:
        """A column's values as float64 (exact integer units divided by 10**scale)."""
        sc = self.scales[col]
        if sc is None:
            return values.to_numpy().astype(np.float64)
        return values.cast(pl.Float64).to_numpy() / 10.0**sc

    def _sums(self, code: np.ndarray, n_cells: int, phys: dict[str, pl.Series]) -> dict[str, list]:
        """Per local cell: every statistic of the plan; exact (Python ints) when both columns are."""
        out: dict[str, list] = {}
        exact, flt = [], []
        for name, a, b in self.plan.stats():
            (exact if self.scales[a] is not None and (b is None or self.scales[b] is not None) else flt).append(
                (name, a, b))
        if exact:
            frame = pl.DataFrame({"code": code, **{c: phys[c] for c in {x for _, a, b in exact for x in (a, b) if x}}})
            agg = frame.group_by("code").agg(
                *((pl.col(a) if b is None else pl.col(a) * pl.col(b)).sum().alias(n) for n, a, b in exact))
            idx = agg["code"].to_numpy()
            for name, _a, _b in exact:
                vals = [0] * n_cells
                for i, v in zip(idx, agg[name].to_list(), strict=True):
                    vals[int(i)] = int(v)
                out[name] = vals
        fl: dict[str, np.ndarray] = {}
        for name, a, b in flt:
            for c in (a, b):
                if c is not None and c not in fl:
                    fl[c] = self.floats(c, phys[c])
            out[name] = np.bincount(code, fl[a] if b is None else fl[a] * fl[b], n_cells).tolist()
        return out

    def _boot_sums(self, camp: str, u: pl.DataFrame, code: np.ndarray, n_cells: int, listed: np.ndarray,
                   phys: dict[str, pl.Series]) -> np.ndarray:
        """Replicate sums (b, cell, 1 + columns) of the listed rows per local cell, each row's
        weights keyed by (seed, replicate, customer id, campaign)."""
        from centile.clubs.compute import customer_hashes
        from centile.kernels.bootstrap import poisson_bootstrap_sums
        from centile.uplift.holdout import salt_seed

        p = self.plan
        idx = np.flatnonzero(listed)
        sub = code[idx]
        order = idx[np.argsort(sub, kind="stable")]
        offsets = np.zeros(n_cells + 1, np.int64)
        np.cumsum(np.bincount(sub, minlength=n_cells), out=offsets[1:])
        take = pl.Series(order)
        if all(self.scales[c] is not None for c in p.boot):  # integer units: exact int64 sums
            values = np.vstack([phys[c].gather(take).cast(pl.Int64).to_numpy() for c in p.boot])
        else:
            values = np.vstack([self.floats(c, phys[c])[order] for c in p.boot])
        keys = customer_hashes(u["customer_id"].gather(take), salt_seed(camp, p.seed))
        return poisson_bootstrap_sums(values, offsets, p.seeds, keys)


def _dense(col: pl.Series) -> tuple[np.ndarray, list[str]]:
    """Dense codes of a label column in sorted label order, and the labels."""
    s = labels(col)
    cats = s.unique().sort()
    return s.cast(pl.Enum(cats)).to_physical().to_numpy().astype(np.int64), cats.to_list()


def _group(parts: list[tuple[np.ndarray, list[str]]]) -> tuple[np.ndarray, list[tuple[str, ...]]] | None:
    """Dense codes of the label tuples present (in sorted tuple order) and the tuples; None when
    the mixed-radix key would not fit in 62 bits."""
    size = 1
    for _c, labs in parts:
        size *= max(len(labs), 1)
    if size >= 2**62:
        return None
    key = np.zeros(parts[0][0].size, np.int64)
    for codes, labs in parts:
        key = key * len(labs) + codes
    if size <= 1 << 22:
        present = np.flatnonzero(np.bincount(key, minlength=size))
        remap = np.zeros(size, np.int64)
        remap[present] = np.arange(present.size)
        code = remap[key]
    else:
        present, code = np.unique(key, return_inverse=True)
    rows: list[list[str]] = [[] for _ in range(present.size)]
    rest = present.copy()
    for _codes, labs in reversed(parts):
        digit = rest % len(labs)
        rest //= len(labs)
        for j, d in enumerate(digit.tolist()):
            rows[j].append(labs[d])
    return code.astype(np.int64), [tuple(reversed(r)) for r in rows]


def _check_range(phys: dict[str, pl.Series], n: int) -> None:
    """Exact sums of products stay within Int128 (2**127): refuse absurd magnitudes clearly."""
    for c, s in phys.items():
        if s.dtype == pl.Int128 and n:
            m = int(s.abs().max() or 0)
            if m >= 2**62 or m * m * n >= 2**125:
                raise InputError(f"uplift: column {c} has values too large to sum exactly "
                                 f"(|value| up to {m} units); check its unit or scale")
