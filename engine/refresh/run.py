"""``centile run --state DIR``: the whole pipeline over a refresh state.

What reads what:

* the ``features`` stage's feature table comes from the state (:func:`state_features`, with its
  feature cache): equal to the full computation over every applied batch;
* the ``clv`` stage's summary comes from the state's purchase days (:func:`state_clv_days`,
  :mod:`centile.refresh.clv`); a state built before they were kept has none, and the stage reads
  the batch files as before, with a note;
* the ``steering`` stage's order history (spend and category spend sums, the distinct order times
  its response counts join to the contacts) comes from the state (:func:`state_steering`,
  :mod:`centile.refresh.steering`); a state built before it was kept has none, and the stage
  reads the batch files as before, with a note;
* the ``uplift`` stage's outcome windows and the ``attribution`` stage's conversions come from the
  state's order totals (:func:`state_order_totals`, :mod:`centile.refresh.order_totals`: one row
  per order); a state built before they were kept has none, and those stages read the batch files
  as before, with a note;
* the ``baskets`` and ``recommend`` stages read the state's basket lines (:func:`state_basket_lines`,
  :mod:`centile.refresh.baskets`); a state built before they were kept has none, and those
  stages read the batch files as before, with a note;
* the features stage's ``rejects.parquet`` and validation summary of the order lines and e-mail
  events come from what each ingest kept (:func:`state_inputs`, :mod:`centile.refresh.rejects`);
* a stage that reads a batch table from the state says so (``Stage.from_state``, the ``*_served``
  functions here); a batch table no stage of the run reads from its files is registered (its
  columns, its line count) but not validated;
* the other input tables (products, customers, contacts, touchpoints) are read from the config as
  usual; the products table must be the one the state was built with.

The ledger's fingerprints enter the keys of the stages that read the state (the run option
``refresh_state``: features, clv, steering, baskets, recommend, uplift, attribution), so a run
after an ingest never reuses their outputs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from types import MappingProxyType
from typing import Any

import polars as pl
import pyarrow as pa

from centile.backend.session import TableSummary, connect
from centile.config import Config
from centile.errors import InputError
from centile.refresh import rejects as rj
from centile.refresh import state as st
from centile.refresh.baskets import StateBaskets, has_basket_lines
from centile.refresh.clv import StateDays, has_purchases
from centile.refresh.features import _load, features_from_state
from centile.refresh.ingest import BATCH_TABLES, _check_state, batch_specs
from centile.refresh.order_totals import StateOrders, has_order_totals
from centile.refresh.steering import StateHistory, has_steering


def _ledger_paths(doc: dict[str, Any], root: Path) -> dict[str, list[Path]]:
    """The ledger's batch files per table, each checked present with the size it was applied at (the
    stages that read rows read them; a full content check is what a late-row rebuild does)."""
    out: dict[str, list[Path]] = {t: [] for t in BATCH_TABLES}
    for e in doc["ledger"]:
        p = Path(e["path"])
        if not p.is_file() or p.stat().st_size != int(e["bytes"]):
            raise InputError(f"refresh state {root}: batch file {p} (applied as {e['fingerprint']}) is missing "
                             "or changed since it was ingested; the stages that read order lines need every "
                             "batch file as applied: restore it, or rebuild the state into an empty folder")
        out[e["table"]].append(p)
    return out


def _ledger_digest(doc: dict[str, Any]) -> str:
    return hashlib.blake2b("\n".join(e["fingerprint"] for e in doc["ledger"]).encode(), digest_size=16).hexdigest()


def run_config(cfg: Config, state: str | Path) -> tuple[Config, dict[str, Any]]:
    """The config of ``centile run --state``: orders and e-mail events are the ledger's batch files
    (the config's own paths for them, if any, are not read), ``as_of`` is fixed (default: the
    state's watermark) so every stage sees the same one; and the run option that enters the
    features stage's key.

    Raises
    ------
    ConfigError
        The config maps columns differently from the config the state was built with, or maps
        another products table.
    InputError
        No state, ``as_of`` before its watermark, or a batch file missing or changed.
    """
    root = Path(state).resolve()
    doc = _load(root)
    _check_state(doc, cfg, root)
    as_of = st.as_of_for(doc, cfg.as_of, "run without --state over the batch files")
    ledger = _ledger_paths(doc, root)
    tables = {t: spec for t, spec in cfg.tables.items() if t not in ledger}
    tables.update(batch_specs(cfg, ledger, f"a run reads one format per table: convert the batches of refresh "
                                           f"state {root} to one format and rebuild the state"))
    option = {"path": str(root), "ledger": _ledger_digest(doc), "batches": len(doc["ledger"]), "watermark": doc["watermark"]}
    return cfg.with_(tables=MappingProxyType(tables), as_of=as_of), option


def _current(option: dict[str, Any]) -> dict[str, Any]:
    """The state's manifest, checked to be the one the run started with."""
    doc = _load(option["path"])
    if _ledger_digest(doc) != option["ledger"]:
        raise InputError(f"refresh state {option['path']}: an ingest changed the state during this run; "
                         "run again")
    return doc


def features_served(option: dict[str, Any]) -> tuple[str, ...]:
    """The batch tables the features stage of a ``centile run --state`` reads from the state: both,
    when the state keeps its batches' rejects (else their rejects and counts come from the files)."""
    return BATCH_TABLES if rj.has_rejects(_current(option)) else ()


def clv_served(option: dict[str, Any]) -> tuple[str, ...]:
    """The batch tables the clv stage of a ``centile run --state`` reads from the state."""
    return ("orders",) if has_purchases(_current(option)) else ()


def steering_served(option: dict[str, Any]) -> tuple[str, ...]:
    """The batch tables the steering stage of a ``centile run --state`` reads from the state."""
    return ("orders",) if has_steering(_current(option)) else ()


def state_clv_days(cfg: Config, option: dict[str, Any]) -> StateDays | None:
    """The purchase days of the state of a ``centile run --state`` (``option`` from
    :func:`run_config`) for the clv stage; None for a state built before they
    were kept (the stage then reads the ledger's batch files)."""
    doc = _current(option)  # read and checked once: the days are read against this manifest
    return StateDays(cfg, Path(option["path"]), doc) if has_purchases(doc) else None


#: the clv stage's note when the state has no purchase days
NO_PURCHASES = st.not_kept_note("purchase days", "the CLV summary was read")


def state_inputs(cfg: Config, option: dict[str, Any]) -> tuple[pa.Table, dict[str, TableSummary]] | None:
    """The rejected rows (the columns of the session's ``rejects`` view) and the validation
    summaries of the batch tables of a ``centile run --state``, from the state; None for a state
    built before it kept them. (Read by a connection of their own: the session's reads its
    input files only.)"""
    doc = _current(option)
    if not rj.has_rejects(doc):
        return None
    root = Path(option["path"])
    ledger = {t: [Path(e["path"]) for e in doc["ledger"] if e["table"] == t] for t in BATCH_TABLES}
    con = connect(cfg)
    try:
        with st.state_lock(root):  # an ingest's rebuild replaces the reject files
            _current(option)
            return con.sql(rj.rejects_sql(doc, root, ledger)).to_arrow_table(), rj.summaries(con, doc, root, ledger)
    finally:
        con.close()


def state_steering(cfg: Config, option: dict[str, Any], s: Any) -> StateHistory | None:
    """The steering history of the state of a ``centile run --state`` (``option`` from
    :func:`run_config`; contacts from session ``s``); None for a state built before it was kept
    (the stage then reads the ledger's batch files)."""
    doc = _current(option)
    return StateHistory(cfg, Path(option["path"]), doc, s) if has_steering(doc) else None


#: the steering stage's note when the state has no steering history
NO_STEERING = st.not_kept_note("the steering history", "the spend and order times were read")


def order_totals_served(option: dict[str, Any]) -> tuple[str, ...]:
    """The batch tables the uplift and attribution stages of a ``centile run --state`` read from the
    state."""
    return ("orders",) if has_order_totals(_current(option)) else ()


def state_order_totals(option: dict[str, Any]) -> StateOrders | None:
    """The order totals of the state of a ``centile run --state`` (``option`` from
    :func:`run_config`) for the uplift and attribution stages; None for a state built before they
    were kept (the stages then read the ledger's batch files)."""
    doc = _current(option)
    return StateOrders.of(Path(option["path"]), doc) if has_order_totals(doc) else None


#: the uplift and attribution stages' note when the state has no order totals
NO_ORDER_TOTALS = st.not_kept_note("order totals", "the orders were read")


def basket_lines_served(option: dict[str, Any]) -> tuple[str, ...]:
    """The batch tables the baskets and recommend stages of a ``centile run --state`` read from the
    state."""
    return ("orders",) if has_basket_lines(_current(option)) else ()


def state_basket_lines(cfg: Config, option: dict[str, Any]) -> StateBaskets | None:
    """The basket lines of the state of a ``centile run --state`` (``option`` from
    :func:`run_config`) for the baskets and recommend stages at the run's as_of; None for a state
    built before they were kept (the stages then read the ledger's batch files)."""
    doc = _current(option)
    if not has_basket_lines(doc):
        return None
    return StateBaskets(cfg, Path(option["path"]), doc, st.as_of_for(doc, cfg.as_of, "run without --state"))


#: the baskets and recommend stages' note when the state has no basket lines
NO_BASKET_LINES = st.not_kept_note("basket lines", "the order lines were read")


def state_features(cfg: Config, option: dict[str, Any]) -> tuple[pl.DataFrame, dict[str, str], dt.date]:
    """The feature table of a ``centile run --state`` from the state (``option`` from
    :func:`run_config`); the config's orders and e-mail paths are the ledger's, not read here."""
    _current(option)
    base = cfg.with_(tables=MappingProxyType({k: v for k, v in cfg.tables.items() if k not in BATCH_TABLES}))
    df, _avail, skipped, as_of = features_from_state(base, option["path"])
    return df.rechunk(), skipped, as_of


__all__ = ["NO_BASKET_LINES", "NO_ORDER_TOTALS", "NO_PURCHASES", "NO_STEERING", "basket_lines_served",
           "clv_served", "features_served", "order_totals_served", "run_config", "state_basket_lines",
           "state_clv_days", "state_features", "state_inputs", "state_order_totals", "state_steering",
           "steering_served"]
