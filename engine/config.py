"""One frozen configuration object: TOML file, then ``CENTILE_*`` environment, then CLI flags.

The config is passed explicitly to every job; nothing reads it globally.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from centile.errors import ConfigError

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
#: Config sections owned by later jobs, kept raw in :attr:`Config.sections`.
JOB_SECTIONS = ("clv", "segments", "uplift", "holdout", "report")
FORMATS = ("parquet", "csv")


@dataclass(frozen=True)
class TableSpec:
    """Where one input table lives and how its columns map onto the contract.

    ``columns`` maps a canonical column to a source column name or, when no
    such column exists, a SQL expression over the source's columns.
    ``filter`` is a SQL predicate over the source's own columns.
    """

    name: str
    paths: tuple[str, ...]
    format: str
    columns: Mapping[str, str] = field(default_factory=dict)
    filter: str | None = None
    timestamp_format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Windows:
    """Trailing windows in days before ``as_of`` (``as_of`` itself excluded)."""

    d6: int = 182
    d12: int = 365
    d24: int = 730


@dataclass(frozen=True)
class ClubSpec:
    """One club: a metric ranked over the eligible customers, in priority order."""

    name: str
    metric: str
    direction: str = "desc"
    eligible: str | None = None
    tie_break: tuple[str, ...] = ()
    shares: tuple[float, ...] = (0.01, 0.05)


DEFAULT_CLUBS: tuple[ClubSpec, ...] = (
    ClubSpec("frequency_champions", "orders_12m", eligible="orders_12m >= 1",
             tie_break=("net_revenue_12m",)),
    ClubSpec("high_price_buyers", "max_price_kept_24m", eligible="max_price_kept_24m > 0"),
    ClubSpec("responders_without_purchase", "click_rate_12m",
             eligible="emails_sent_12m >= 3 AND orders_12m = 0", tie_break=("open_rate_12m",)),
    ClubSpec("price_ignorers", "premium_margin_12m", eligible="premium_margin_12m > 0"),
    ClubSpec("heavy_returners", "returned_value_12m", eligible="orders_12m >= 2 AND returned_value_12m > 0"),
    ClubSpec("lifetime_heroes", "net_revenue_lifetime", eligible="tenure_days >= 365",
             tie_break=("tenure_days",)),
)


@dataclass(frozen=True)
class Config:
    """Everything a run needs. Build it with :func:`load_config`."""

    tables: Mapping[str, TableSpec]
    as_of: dt.date | None = None
    strict: bool = False
    windows: Windows = Windows()
    top_categories: int = 8
    threads: int | None = None
    memory_limit: str | None = None
    clubs: tuple[ClubSpec, ...] = DEFAULT_CLUBS
    strategy: str = "priority"
    group_by: str | None = None
    seed: int = 0
    source: str | None = None
    #: Raw TOML sections of the later jobs (``[clv]``, ``[segments]``, ``[uplift]``,
    #: ``[holdout]``, ``[report]``); each job parses and validates its own section.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))

    def section(self, name: str) -> Mapping[str, Any]:
        """The raw TOML section ``[name]`` (empty when the config has none)."""
        return self.sections.get(name, MappingProxyType({}))

    def with_(self, **changes: Any) -> Config:
        """A copy with some fields replaced (the config itself is immutable)."""
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly view for the manifest."""
        return {
            "source": self.source,
            "as_of": self.as_of.isoformat() if self.as_of else None,
            "strict": self.strict,
            "windows_days": {"6m": self.windows.d6, "12m": self.windows.d12, "24m": self.windows.d24},
            "top_categories": self.top_categories,
            "threads": self.threads,
            "memory_limit": self.memory_limit,
            "strategy": self.strategy,
            "group_by": self.group_by,
            "seed": self.seed,
            "tables": {n: {"paths": list(t.paths), "format": t.format, "columns": dict(t.columns),
                           "filter": t.filter, "timestamp_format": t.timestamp_format}
                       for n, t in self.tables.items()},
            "clubs": [{"name": c.name, "metric": c.metric, "direction": c.direction,
                       "eligible": c.eligible, "tie_break": list(c.tie_break),
                       "shares": list(c.shares)} for c in self.clubs],
            "sections": {k: dict(v) for k, v in self.sections.items()},
        }


# ---------------------------------------------------------------------------
# discovery of tables inside a folder

def _format_of(path: str) -> str:
    low = path.lower()
    for suffix in (".csv", ".csv.gz", ".tsv", ".txt"):
        if low.endswith(suffix):
            return "csv"
    return "parquet"


def discover(data_dir: str | os.PathLike[str]) -> dict[str, TableSpec]:
    """Find the contract's tables by name inside ``data_dir``.

    A table is a folder ``<name>/`` (Parquet files, Hive partitions allowed),
    or files ``<name>*.parquet`` / ``<name>*.csv``. Tables not found are absent.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"--data {root}: not a folder; pass the folder that holds orders.parquet "
                          "(or orders/, orders.csv) or use a config file (-c centile.toml)")
    found: dict[str, TableSpec] = {}
    for name in TABLES:
        folder = root / name
        if folder.is_dir():
            found[name] = TableSpec(name, (str(folder),), "parquet")
            continue
        for fmt, patterns in (("parquet", (f"{name}*.parquet",)),
                              ("csv", (f"{name}*.csv", f"{name}*.csv.gz"))):
            files = sorted({str(p) for pat in patterns for p in root.glob(pat) if p.is_file()})
            if files:
                found[name] = TableSpec(name, tuple(files), fmt)
                break
    return found


def resolve_paths(table: str, path: str, base: Path) -> tuple[str, ...]:
    """Expand a file, folder or glob (relative to ``base``) into existing paths."""
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = base / p
    if any(ch in path for ch in "*?["):
        hits = sorted(glob.glob(str(p), recursive=True))
        if not hits:
            raise ConfigError(f"tables.{table}.path: the glob {path!r} matches no file (looked in {p.parent})")
        return tuple(hits)
    if not p.exists():
        raise ConfigError(f"tables.{table}.path: {p} does not exist; fix the path in the config "
                          "(relative paths are relative to the config file)")
    return (str(p),)


# ---------------------------------------------------------------------------
# loading

def as_date(value: Any, where: str) -> dt.date | None:
    """A date from TOML (a date, a datetime or 'YYYY-MM-DD' text); ConfigError naming ``where``."""
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a date; write it as YYYY-MM-DD") from None


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: {value!r} is not true/false")


def _as_int(value: Any, where: str, *, minimum: int = 0) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if out < minimum:
        raise ConfigError(f"{where}: {out} must be at least {minimum}")
    return out


def _table_from_toml(name: str, doc: Mapping[str, Any], base: Path,
                     discovered: Mapping[str, TableSpec]) -> TableSpec:
    if name not in CONTRACT:
        raise ConfigError(f"[tables.{name}]: unknown table; the contract has {', '.join(TABLES)}")
    known = {"path", "format", "columns", "filter", "timestamp_format", "csv"}
    extra = set(doc) - known
    if extra:
        raise ConfigError(f"[tables.{name}]: unknown key(s) {sorted(extra)}; allowed: {sorted(known)}")
    if "path" in doc:
        paths = resolve_paths(name, str(doc["path"]), base)
        fmt = doc.get("format") or _format_of(paths[0])
    elif name in discovered:
        paths, fmt = discovered[name].paths, doc.get("format") or discovered[name].format
    else:
        raise ConfigError(f"[tables.{name}]: no `path`, and no {name} table was found in the data folder")
    if fmt not in FORMATS:
        raise ConfigError(f"[tables.{name}].format: {fmt!r} is not one of {FORMATS}")
    columns = dict(doc.get("columns", {}))
    unknown = set(columns) - set(CONTRACT[name])
    if unknown:
        raise ConfigError(f"[tables.{name}.columns]: {sorted(unknown)} not in the contract; "
                          f"{name} has {', '.join(CONTRACT[name])}")
    for k, v in columns.items():
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"[tables.{name}.columns].{k}: expected a column name or SQL expression")
    return TableSpec(name, paths, fmt, MappingProxyType(columns), doc.get("filter") or None,
                     doc.get("timestamp_format") or None, MappingProxyType(dict(doc.get("csv", {}))))


def _clubs_from_toml(items: list[Any], default_shares: tuple[float, ...]) -> tuple[ClubSpec, ...]:
    clubs = []
    seen = set()
    for i, item in enumerate(items):
        where = f"[[clubs.club]] #{i + 1}"
        if not isinstance(item, Mapping) or "name" not in item or "metric" not in item:
            raise ConfigError(f"{where}: each club needs `name` and `metric`")
        name = str(item["name"])
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"{where}: club name {name!r} may use letters, digits and _ only")
        if name in seen:
            raise ConfigError(f"{where}: club {name!r} is defined twice")
        seen.add(name)
        direction = str(item.get("direction", "desc")).lower()
        if direction not in ("desc", "asc"):
            raise ConfigError(f"{where} ({name}): direction must be 'desc' (larger is better) or 'asc'")
        shares = tuple(float(s) for s in item.get("shares", default_shares))
        _check_shares(shares, f"{where} ({name}).shares")
        tie = item.get("tie_break", ())
        tie = (tie,) if isinstance(tie, str) else tuple(str(t) for t in tie)
        clubs.append(ClubSpec(name, str(item["metric"]), direction, item.get("eligible") or None,
                              tie, shares))
    return tuple(clubs)


def _check_shares(shares: tuple[float, ...], where: str) -> None:
    if not shares or any(not (0 < s <= 1) for s in shares) or sum(shares) > 1:
        raise ConfigError(f"{where}: {list(shares)} must be fractions in (0, 1] summing to at most 1, "
                          "e.g. [0.01, 0.05]")


def load_config(path: str | os.PathLike[str] | None = None, *, data: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the run configuration.

    Precedence, lowest first: the TOML file at ``path``; ``CENTILE_*``
    environment variables (``CENTILE_DATA``, ``CENTILE_AS_OF``,
    ``CENTILE_STRICT``, ``CENTILE_THREADS``, ``CENTILE_MEMORY_LIMIT``); then
    ``data`` and keyword ``overrides`` (``as_of``, ``strict``, ``threads``,
    ``memory_limit``, ``strategy``, ``seed``, ``group_by``) as given on the
    command line. ``None`` overrides are ignored.

    Examples
    --------
    >>> cfg = load_config(data="demo/data")                    # doctest: +SKIP
    >>> cfg = load_config("centile.toml", as_of="2024-01-01")  # doctest: +SKIP
    """
    env = os.environ if env is None else env
    doc: dict[str, Any] = {}
    base = Path.cwd()
    source = None
    if path is not None:
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {p} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p}: invalid TOML: {exc}") from None
        base = p.resolve().parent
        source = str(p)
    known = {"data", "as_of", "strict", "threads", "memory_limit", "seed", "tables", "features", "clubs",
             *JOB_SECTIONS}
    extra = set(doc) - known
    if extra:
        raise ConfigError(f"config: unknown top-level key(s) {sorted(extra)}; allowed: {sorted(known)}")

    data_dir: Path | None = None
    if doc.get("data"):
        data_dir = Path(doc["data"]).expanduser()
        data_dir = data_dir if data_dir.is_absolute() else base / data_dir
    if env.get("CENTILE_DATA"):
        data_dir = Path(env["CENTILE_DATA"])
    if data is not None:
        data_dir = Path(data)
    discovered = discover(data_dir) if data_dir is not None else {}

    tables = dict(discovered)
    for name, tdoc in (doc.get("tables") or {}).items():
        if not isinstance(tdoc, Mapping):
            raise ConfigError(f"[tables.{name}] must be a table")
        tables[name] = _table_from_toml(name, tdoc, base, discovered)
    if "orders" not in tables:
        where = f"in {data_dir}" if data_dir else "(no --data folder and no [tables.orders] in the config)"
        raise ConfigError(f"no orders table found {where}; orders is required: put orders.parquet, "
                          "orders/ or orders.csv in the data folder, or set [tables.orders] path")

    settings: dict[str, Any] = {k: doc.get(k) for k in ("as_of", "strict", "threads", "memory_limit", "seed")}
    for key in ("as_of", "strict", "threads", "memory_limit"):
        if env.get(f"CENTILE_{key.upper()}"):
            settings[key] = env[f"CENTILE_{key.upper()}"]
    feats = doc.get("features", {}) or {}
    clubs_doc = doc.get("clubs", {}) or {}
    settings["strategy"] = clubs_doc.get("strategy")
    settings["group_by"] = clubs_doc.get("group_by")
    for k, v in overrides.items():
        if v is not None:
            settings[k] = v

    windows = Windows(
        _as_int(feats.get("window_6m", 182), "features.window_6m", minimum=1),
        _as_int(feats.get("window_12m", 365), "features.window_12m", minimum=1),
        _as_int(feats.get("window_24m", 730), "features.window_24m", minimum=1),
    )
    default_shares = tuple(float(s) for s in clubs_doc.get("shares", (0.01, 0.05)))
    _check_shares(default_shares, "clubs.shares")
    if "club" in clubs_doc:
        clubs = _clubs_from_toml(list(clubs_doc["club"]), default_shares)
    else:
        clubs = tuple(replace(c, shares=default_shares) for c in DEFAULT_CLUBS)
    strategy = str(settings.get("strategy") or "priority")
    if strategy not in ("priority", "best-rank"):
        raise ConfigError(f"clubs strategy {strategy!r}: use 'priority' or 'best-rank'")
    threads = settings.get("threads")
    return Config(
        tables=MappingProxyType(tables),
        as_of=as_date(settings.get("as_of"), "as_of"),
        strict=_as_bool(settings.get("strict") or False, "strict"),
        windows=windows,
        top_categories=_as_int(feats.get("top_categories", 8), "features.top_categories"),
        threads=None if threads in (None, "", 0, "0") else _as_int(threads, "threads", minimum=1),
        memory_limit=settings.get("memory_limit") or None,
        clubs=clubs,
        strategy=strategy,
        group_by=settings.get("group_by") or None,
        seed=_as_int(settings.get("seed") or 0, "seed"),
        source=source,
        sections=MappingProxyType({k: MappingProxyType(dict(_section(doc, k))) for k in JOB_SECTIONS
                                   if k in doc}),
    )


def _section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = doc[name]
    if not isinstance(value, Mapping):
        raise ConfigError(f"[{name}] must be a table (a TOML section), got {type(value).__name__}")
    return value
