"""The data contract: the input tables and their columns, and the columns of the customer table.

Inputs: every table of :data:`CONTRACT` maps source columns onto these names
(``[tables.<name>.columns]``); only ``orders`` is required.

Customer table: the per-customer columns club metrics, eligibility and
segment rules may use. The features register theirs, and so does every stage
that publishes per-customer columns (CLV's ``clv_*``), so a club metric naming
a column nobody computes fails when the config is loaded, not after an hour.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from types import MappingProxyType

#: Canonical tables and their columns: name -> (SQL type family, required).
#: "id" columns keep an integer type when every table agrees, otherwise VARCHAR.
CONTRACT: Mapping[str, Mapping[str, tuple[str, bool]]] = MappingProxyType({
    "orders": {
        "customer_id": ("id", True), "order_id": ("key", False), "order_ts": ("timestamp", True),
        "unit_price": ("double", True), "quantity": ("double", False),
        "product_id": ("product", False), "category": ("varchar", False),
        "unit_cost": ("double", False), "returned_quantity": ("double", False),
        "channel": ("varchar", False),
    },
    "products": {
        "product_id": ("product", True), "category": ("varchar", False),
        "list_price": ("double", False), "market_price": ("double", False),
        "unit_cost": ("double", False),
    },
    "email_events": {
        "customer_id": ("id", True), "ts": ("timestamp", True), "event": ("varchar", True),
        "campaign_id": ("key", False),
    },
    "contacts": {
        "customer_id": ("id", True), "campaign_id": ("key", True), "sent_ts": ("timestamp", True),
        "medium": ("varchar", False), "cost": ("double", False), "group": ("varchar", False),
    },
    "customers": {
        "customer_id": ("id", True), "signup_ts": ("timestamp", False),
        "birth_year": ("integer", False), "gender": ("varchar", False),
        "region": ("varchar", False), "postal_code": ("varchar", False),
    },
    "touchpoints": {
        "customer_id": ("id", True), "ts": ("timestamp", True), "channel": ("varchar", True),
    },
})

TABLES = tuple(CONTRACT)
FORMATS = ("parquet", "csv")

_CUSTOMER_COLUMNS: dict[str, str] = {}
_CUSTOMER_PATTERNS: dict[str, str] = {}


def register_customer_columns(owner: str, names: Iterable[str], patterns: Iterable[str] = ()) -> None:
    """Declare per-customer columns that ``owner`` puts into the customer table (``share_*`` patterns too)."""
    for n in names:
        _CUSTOMER_COLUMNS.setdefault(n, owner)
    for p in patterns:
        _CUSTOMER_PATTERNS.setdefault(p, owner)


def customer_columns() -> tuple[dict[str, str], dict[str, str]]:
    """(column -> owner, pattern -> owner) of the customer table, built-in capabilities loaded."""
    from centile.registry import load_builtin

    load_builtin()
    return dict(_CUSTOMER_COLUMNS), dict(_CUSTOMER_PATTERNS)


def is_customer_column(name: str, columns: Iterable[str], patterns: Iterable[str]) -> bool:
    return name in set(columns) or any(fnmatch.fnmatchcase(name, p) for p in patterns)
