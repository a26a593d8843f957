"""The incremental refresh's state on disk: a manifest, a ledger and Parquet files per partition.

Layout of ``DIR``::

    manifest.json            written last (temp file + rename): what is current
    p0000/<table>-<gen>.parquet  the runs of a state table in one customer-hash partition
    p0000/<table>-<gen>.sorted.arrow  the same rows sorted by customer, for the tables the
                             features read (the run's ``gather``: centile.refresh.gather)
    p0000/hashes-<gen>.arrow the line hashes and their days, sorted by day and hash
                             (centile.refresh.hashes)
    changes/<gen>.parquet    the customers each ingest changed (for the feature cache)
    cache.json, cache/       the last feature table computed from the state, and its as_of

An ingest adds its batch's aggregates as one more run per table and partition; a table with
many runs is merged into one (and its day buckets pruned). Readers merge the runs by the
table's aggregates, so runs and merged files give the same state.

Partition ``p`` of ``partitions`` holds the customers of the bucket range
:meth:`centile.backend.partitions.Partitioning.bounds` (the buckets of the validated tables).
Every state table merges by addition, min, max or OR over its key (:data:`TABLES`), so a
batch's rows aggregate into a delta that merges into the state in any order.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from centile.errors import InputError, OutputError

#: the manifest's format (2: customers bucketed by :func:`~centile.backend.partitions.bucket_sql`'s
#: second hash; a state of version 1 holds its customers in other buckets)
VERSION = 2

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Table:
    """One state table: key columns, value columns with their merge, the day column it is pruned
    by (None: kept whole), and the column types (``{id}``, ``{product}``, ``{order}``: the id
    types of the state; ``{order_key}``: the order ids' own type, integers as BIGINT; DATE without
    order ids)."""

    keys: tuple[str, ...]
    merge: dict[str, str]
    day: str | None
    types: dict[str, str]
    #: the table needs this orders column (None: always present)
    needs: str | None = None
    #: run files are written in this column's order, so that a scan for the rows of a few days
    #: (the window starts an ``as_of`` moves past) skips the other row groups by their statistics
    order: str | None = None
    #: the feature queries read it (the others: ``hashes`` for ingest's duplicate check,
    #: ``purchases`` for the CLV summary, ``steering_*`` for the steering stage, ``order_totals`` for
    #: uplift and attribution, ``basket_lines`` for baskets and recommendations)
    features: bool = True


TABLES: dict[str, Table] = {
    "totals": Table(("customer_id",), {"gross": "sum", "returned": "sum", "lines": "sum", "events": "sum"}, None,
                    {"customer_id": "{id}", "gross": "DECIMAL(38,4)", "returned": "DECIMAL(38,4)",
                     "lines": "BIGINT", "events": "BIGINT"}),
    "orders": Table(("customer_id", "order_id"), {"first_ts": "min", "last_ts": "max", "channel": "min"}, None,
                    {"customer_id": "{id}", "order_id": "{order}", "first_ts": "TIMESTAMP",
                     "last_ts": "TIMESTAMP", "channel": "VARCHAR"}, order="last_ts"),
    "days": Table(("customer_id", "day"), {"gross": "sum", "returned": "sum"}, "day",
                  {"customer_id": "{id}", "day": "DATE", "gross": "DECIMAL(38,4)", "returned": "DECIMAL(38,4)"}, order="day"),
    "kept": Table(("customer_id", "product_id", "day"), {"price": "max", "net": "sum", "neg": "bool_or"}, "day",
                  {"customer_id": "{id}", "product_id": "{product}", "day": "DATE", "price": "DOUBLE",
                   "net": "DOUBLE", "neg": "BOOLEAN"}, order="day"),
    "categories": Table(("customer_id", "category"), {"net": "sum"}, None,
                        {"customer_id": "{id}", "category": "VARCHAR", "net": "DECIMAL(38,4)"}),
    "email_keyed": Table(("customer_id", "campaign_id"), {"sent_ts": "min", "opened": "bool_or",
                                                          "clicked": "bool_or"}, None,
                         {"customer_id": "{id}", "campaign_id": "VARCHAR", "sent_ts": "TIMESTAMP",
                          "opened": "BOOLEAN", "clicked": "BOOLEAN"}, order="sent_ts"),
    "email_days": Table(("customer_id", "day"), {"sent": "sum", "opens": "sum", "clicks": "sum"}, "day",
                        {"customer_id": "{id}", "day": "DATE", "sent": "BIGINT", "opens": "BIGINT",
                         "clicks": "BIGINT"}, order="day"),
    # premium margin per customer and day (feat_premium.sql): the margins of the lines priced above
    # their product's market price, with the products table the state was built with
    "premium": Table(("customer_id", "day"), {"margin": "sum"}, "day",
                     {"customer_id": "{id}", "day": "DATE", "margin": "DECIMAL(38,4)"}, order="day"),
    # 64-bit hashes of the lines with an order_id, to set aside a line already applied in an
    # earlier batch (the session does the same within one read: set_aside_duplicates); the delta
    # table of an ingest has these columns, its runs keep the hash and the day, sorted by day and
    # hash (centile.refresh.hashes)
    "hashes": Table(("customer_id", "h", "day"), {}, "day",
                    {"customer_id": "{id}", "h": "UBIGINT", "day": "DATE"}, features=False),
    # purchase days per customer (clv_days.sql: a day with a line of positive quantity) and their
    # kept value, for the CLV summary; never pruned: the purchase models need the whole history
    "purchases": Table(("customer_id", "day"), {"value": "sum"}, None,
                       {"customer_id": "{id}", "day": "DATE", "value": "DECIMAL(38,4)"}, features=False),
    # the steering stage's order history (centile.refresh.steering), kept whole: net spend and
    # the costed lines' revenue and cost of goods per customer, net spend per (customer, the line's
    # own category), both exact DECIMAL(38,6) sums as steering_spend_sums.sql / steering_category_sums.sql
    # round them; the distinct order times of positive lines (steering_order_times.sql), which
    # the response counts join to the contacts of any time before as_of
    "steering_spend": Table(("customer_id",), {"revenue": "sum", "costed_revenue": "sum", "cost": "sum"}, None,
                            {"customer_id": "{id}", "revenue": "DECIMAL(38,6)", "costed_revenue": "DECIMAL(38,6)",
                             "cost": "DECIMAL(38,6)"}, features=False),
    "steering_categories": Table(("customer_id", "category"), {"revenue": "sum"}, None,
                                 {"customer_id": "{id}", "category": "VARCHAR", "revenue": "DECIMAL(38,6)"},
                                 features=False),
    "steering_times": Table(("customer_id", "order_ts"), {}, None,
                            {"customer_id": "{id}", "order_ts": "TIMESTAMP"}, features=False),
    # one row per order with any line (returns and zero-quantity lines included), for the uplift's
    # outcome windows and attribution's conversions (centile.refresh.order_totals): the order's
    # first line time, whether it has a line of positive quantity, its net revenue and margin
    # (each line rounded to DECIMAL(18,4) as those stages round it); never pruned: the contacts'
    # windows and the conversions span the whole history
    "order_totals": Table(("customer_id", "order_id"), {"ts": "min", "is_order": "bool_or", "revenue": "sum",
                                                        "margin": "sum"}, None,
                          {"customer_id": "{id}", "order_id": "{order_key}", "ts": "TIMESTAMP", "is_order": "BOOLEAN",
                           "revenue": "DECIMAL(38,4)", "margin": "DECIMAL(38,4)"}, features=False),
    # the positive order lines of baskets and recommendations (baskets_lines.sql) folded per
    # (customer, order, product, category, returned in full or not) into their first and last
    # order_ts: what the basket and recommendation passes read of the lines (centile.refresh.baskets);
    # never pruned: baskets have no window
    "basket_lines": Table(("customer_id", "order_id", "product_id", "category", "kept"),
                          {"first_ts": "min", "last_ts": "max"}, None,
                          {"customer_id": "{id}", "order_id": "{order_key}", "product_id": "{product}",
                           "category": "VARCHAR", "kept": "BOOLEAN", "first_ts": "TIMESTAMP",
                           "last_ts": "TIMESTAMP"}, features=False),
}

#: tables added after the first states were built: a state's manifest lists the tables it holds
#: (``tables``); one without that list was built before these and lacks them
ADDED = ("purchases", "steering_spend", "steering_categories", "steering_times", "order_totals", "basket_lines")


def not_kept(root: Path, what: str, need: str) -> InputError:
    """The error for a state built before it kept ``what`` (``need``: who needs it)."""
    return InputError(f"refresh state {root} was built by an earlier centile that did not keep {what}, which {need} "
                      "(they cannot be added without reading every batch again): rebuild the state into an empty "
                      "folder with `centile ingest --state NEW_DIR BATCH...` over the same batch files")


def not_kept_note(what: str, read: str) -> str:
    """A stage's note when the state was built before it kept ``what`` (``read``: what the stage read
    from the batch files instead)."""
    return (f"the refresh state was built by an earlier centile without {what}, so {read} from its batch files "
            "(the same result, slower); rebuild the state into an empty folder with `centile ingest --state "
            "NEW_DIR BATCH...` to read them from the state")


def state_tables(doc: dict[str, Any]) -> tuple[str, ...]:
    """The tables state ``doc`` holds (an ingest keeps these, and only these, exact)."""
    have = doc.get("tables")
    return tuple(t for t in TABLES if t not in ADDED) if have is None else tuple(t for t in TABLES if t in have)


def column_type(table: str, col: str, types: dict[str, str]) -> str:
    """The SQL type of a state column given the state's id types."""
    return TABLES[table].types[col].format(id=types.get("id", "BIGINT"), product=types.get("product", "BIGINT"),
                                           order=types.get("order", "VARCHAR"),
                                           # the order ids' own type (``orders`` keeps them as text)
                                           order_key=types.get("order_key", types.get("order", "VARCHAR")))


def empty_sql(table: str, types: dict[str, str]) -> str:
    """A typed empty relation with the columns of state table ``table``."""
    cols = ", ".join(f"CAST(NULL AS {column_type(table, c, types)}) AS {c}" for c in TABLES[table].types)
    return f"SELECT {cols} WHERE false"


def file_hash(path: Path) -> str:
    """The content fingerprint of a batch file (blake2b of every byte): the ledger's key."""
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "blake2b:" + h.hexdigest()


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The state's manifest, or None when ``root`` holds no state yet."""
    path = root / MANIFEST
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"refresh state {root}: {MANIFEST} cannot be read ({exc}); restore it or "
                         "rebuild the state into an empty folder") from None
    if doc.get("version") != VERSION:
        raise InputError(f"refresh state {root}: format version {doc.get('version')!r}, this centile "
                         f"reads version {VERSION}; rebuild the state into an empty folder")
    return doc


def write_manifest(root: Path, doc: dict[str, Any]) -> None:
    """Write the manifest atomically (temp file, fsync, rename): the state's commit point."""
    tmp = root / (MANIFEST + ".tmp")
    with tmp.open("w") as fh:
        fh.write(json.dumps(doc, indent=1, sort_keys=True, default=str))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / MANIFEST)


def watermark(doc: dict[str, Any]) -> dt.date | None:
    """The first day the state holds no data for (the day after the newest row loaded)."""
    w = doc.get("watermark")
    return dt.date.fromisoformat(w) if w else None


def as_of_for(doc: dict[str, Any], as_of: dt.date | None, way_out: str) -> dt.date:
    """``as_of``, or the watermark when it is None; an ``as_of`` before the watermark is refused
    with ``way_out`` (the state cannot drop rows it has merged)."""
    wm = watermark(doc)
    as_of = as_of or wm
    if as_of < wm:
        raise InputError(f"as_of {as_of} is before the refresh state's watermark {wm} (the day after the newest "
                         f"row ingested): the state cannot drop rows it has merged. Use an as_of of {wm} or "
                         f"later, or {way_out}")
    return as_of


def referenced(doc: dict[str, Any]) -> set[str]:
    """The partition files the manifest points at (relative paths)."""
    return {f for part in doc.get("parts", []) for runs in part.get("runs", {}).values() for r in runs
            for f in (r["file"], r.get("gather")) if f}


def collect_garbage(root: Path, doc: dict[str, Any]) -> None:
    """Remove partition and change files the manifest no longer points at (left by earlier commits
    or an interrupted ingest)."""
    keep = referenced(doc) | {c["file"] for c in doc.get("changes", [])} | {f["file"] for f in doc.get("rejects", [])}
    for path in [*root.glob("p[0-9]*/*"), *root.glob("changes/*"), *root.glob("rejects/*")]:
        rel = f"{path.parent.name}/{path.name}"
        if rel not in keep:
            path.unlink(missing_ok=True)


CACHE = "cache.json"


def read_cache(root: Path) -> dict[str, Any] | None:
    """The feature cache's description (``cache.json``), or None."""
    try:
        return json.loads((root / CACHE).read_text())
    except (OSError, ValueError):
        return None


def cache_generation(root: Path) -> int | None:
    """The state generation the feature cache was computed at (None: no cache)."""
    meta = read_cache(root)
    return int(meta["gen"]) if meta else None


@contextlib.contextmanager
def state_lock(root: Path) -> Iterator[None]:
    """One ingest or feature computation per state at a time (an ingest removes the files a merge
    replaced; a feature computation writes the cache): the output folders' ``fcntl`` lock."""
    from centile.io.outputs import folder_lock

    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = folder_lock(root)
        lock.__enter__()
    except OutputError:
        raise OutputError(f"refresh state {root} is in use by another centile ingest or features run; "
                          "run again when it is done") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)
