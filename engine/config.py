"""One frozen configuration object: TOML file, then ``CENTILE_*`` environment, then CLI flags.

The config is passed explicitly to every job; nothing reads it globally.

Every section is validated when the config is loaded, before anything runs:
the core keys here, and each capability's section (``[clv]``, ``[segments]``,
``[uplift]``, ...) by the parser it registers with
:func:`register_config_section`. An unknown section or key, a wrong type or a
club metric over a column no stage computes fails at once with the file, the
key, the value and a did-you-mean suggestion.
"""

from __future__ import annotations

import datetime as dt
import difflib
import functools
import glob
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from centile import urls
from centile.contract import CONTRACT, FORMATS, TABLES
from centile.errors import ConfigError
from centile.registry import Registry, load_builtin

#: texts read as NULL by default (``[tables.<t>] null_strings``)
NULL_STRINGS = ("", "NULL", "null", "NA", "N/A")
#: what to do with exact duplicate order lines (``[tables.orders] duplicates``)
DUPLICATES = ("set_aside", "keep")
#: the zone zoned timestamps are turned into by default (``[tables.<t>] timezone``)
DEFAULT_TIMEZONE = "UTC"


@dataclass(frozen=True)
class TableSpec:
    """Where one input table lives and how its columns map onto the contract.

    ``columns`` maps a canonical column to a source column name or, when no
    such column exists, a SQL expression over the source's columns.
    ``filter`` is a SQL predicate over the source's own columns.
    ``null_strings`` are texts read as NULL in identifier and text columns (and,
    for CSV, in every column), so a literal ``NULL`` never becomes a customer.
    ``duplicates`` (orders only): ``"set_aside"`` puts exact duplicate lines (equal
    in every column, an ``order_id`` among them) into the rejects as ``duplicate
    line``; ``"keep"`` keeps them with a note.
    ``timezone`` (an IANA zone name such as ``Europe/Berlin``): zoned timestamps (text
    with an offset or zone, zone-aware Parquet) become wall-clock times of this zone;
    naive timestamps stay as they are.
    """

    name: str
    paths: tuple[str, ...]
    format: str
    columns: Mapping[str, str] = field(default_factory=dict)
    filter: str | None = None
    timestamp_format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    null_strings: tuple[str, ...] = NULL_STRINGS
    duplicates: str = "set_aside"
    timezone: str = DEFAULT_TIMEZONE


@dataclass(frozen=True)
class BackendSpec:
    """Where the per-partition work runs: ``kind`` names a registered backend (``duckdb``: this
    process; ``dask``: the workers of a Dask cluster); ``scheduler`` is a Dask scheduler's address
    (None: a local cluster is started for the run). ``buckets``: whether the validated rows of the
    customer tables are written once into customer-hash pieces that partitions read instead of
    filtering whole tables (``auto``: when several partitions or a cluster will read them;
    ``on``: whenever there is more than one partition; ``off``: never). ``scratch``: the folder
    that takes the run's scratch files (DuckDB's spill, the pieces, frames handed back by the
    workers) instead of a folder beside the output; on a cluster, a shared file system every
    worker mounts at that path."""

    kind: str = "duckdb"
    scheduler: str | None = None
    buckets: str = "auto"
    scratch: str | None = None

    def __post_init__(self) -> None:
        if self.scheduler is not None:  # checked, and without surrounding blanks
            object.__setattr__(self, "scheduler", scheduler_address(self.scheduler))


# ``[protocol://]host:port``: what a Dask client can connect to (``inproc://`` addresses are the
# in-process transport's own and are passed on as they are)
_ADDRESS = re.compile(r"(?:(?P<proto>[A-Za-z][A-Za-z0-9+.-]*)://)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/\s\[\]]+)"
                      r":(?P<port>[0-9]{1,5})/?")


def scheduler_address(address: str) -> str:
    """``address`` if a Dask client can connect to it, else a :class:`ConfigError` saying how to
    write one. Checked before connecting: distributed's client, given an address without a port,
    raises a bare ``ValueError`` and then hangs for 20 s closing itself."""
    text = address.strip() if isinstance(address, str) else address
    if not isinstance(text, str) or not text:
        raise ConfigError(f"scheduler = {address!r} ([backend] scheduler, --scheduler or CENTILE_SCHEDULER): "
                          "expected a Dask scheduler's address such as tcp://host:8786")
    if text.startswith("inproc://"):
        return text
    m = _ADDRESS.fullmatch(text)
    if m is None or not 0 < int(m["port"]) < 65536:
        why = ("the port is not between 1 and 65535" if m is not None
               else "it is not protocol://host:port")
        raise ConfigError(f"scheduler = {address!r} ([backend] scheduler, --scheduler or CENTILE_SCHEDULER) is "
                          f"not a Dask scheduler address ({why}): write it as tcp://host:8786, the address "
                          "`dask scheduler` prints when it starts")
    return text


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
    #: customer-hash partitions of the per-customer work (None: chosen from the data size and memory limit)
    partitions: int | None = None
    backend: BackendSpec = BackendSpec()
    clubs: tuple[ClubSpec, ...] = DEFAULT_CLUBS
    strategy: str = "priority"
    group_by: str | None = None
    seed: int = 0
    source: str | None = None
    #: Raw TOML sections of the capabilities (``[clv]``, ``[segments]``, ``[uplift]``, ...),
    #: validated at load; :meth:`settings` gives each as its capability's typed, frozen object.
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))
    _parsed: dict[str, Any] = field(init=False, default_factory=dict, compare=False, repr=False)

    def section(self, name: str) -> Mapping[str, Any]:
        """The raw TOML section ``[name]`` (empty when the config has none)."""
        return self.sections.get(name, MappingProxyType({}))

    def settings(self, name: str) -> Any:
        """Section ``[name]`` parsed by the parser its capability registered (defaults when absent)."""
        if name not in self._parsed:
            # a section whose module is already imported needs no other capability loaded
            spec = CONFIG_SECTIONS.get(name) or config_sections().get(name)
            if spec is None:
                raise KeyError(f"no config section {name!r} is registered")
            self._parsed[name] = spec.parse(self)
        return self._parsed[name]

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
            "partitions": self.partitions,
            "backend": {"kind": self.backend.kind, "scheduler": self.backend.scheduler,
                        "buckets": self.backend.buckets, "scratch": self.backend.scratch},
            "strategy": self.strategy,
            "group_by": self.group_by,
            "seed": self.seed,
            "tables": {n: {"paths": list(t.paths), "format": t.format, "columns": dict(t.columns),
                           "filter": t.filter, "timestamp_format": t.timestamp_format,
                           "csv": dict(t.options), "null_strings": list(t.null_strings),
                           "duplicates": t.duplicates, "timezone": t.timezone}
                       for n, t in self.tables.items()},
            "clubs": [{"name": c.name, "metric": c.metric, "direction": c.direction,
                       "eligible": c.eligible, "tie_break": list(c.tie_break),
                       "shares": list(c.shares)} for c in self.clubs],
            "sections": {k: dict(v) for k, v in self.sections.items()},
        }


# ---------------------------------------------------------------------------
# the registry of capability sections

@dataclass(frozen=True)
class ConfigSection:
    """A capability's config section: ``parse(cfg)`` returns its typed, frozen settings or raises
    :class:`ConfigError` naming the key."""

    name: str
    parse: Callable[[Config], Any]
    #: given the raw section, does it let a config stand without an orders table (a
    #: capability that plans from tables of its own, such as ``[steering] proposals``)?
    without_orders: Callable[[Mapping[str, Any]], bool] | None = None


CONFIG_SECTIONS: Registry[ConfigSection] = Registry("config section")

#: top-level keys and sections of the core (everything else is a capability's section)
CORE_KEYS = ("data", "as_of", "strict", "threads", "memory_limit", "partitions", "seed", "tables", "features",
             "clubs", "backend")
BACKEND_KEYS = ("kind", "scheduler", "buckets", "scratch")

#: the values of ``[backend] buckets``
BUCKET_MODES = ("auto", "on", "off")
FEATURE_KEYS = ("window_6m", "window_12m", "window_24m", "top_categories")
CLUBS_KEYS = ("strategy", "group_by", "shares", "club")
CLUB_KEYS = ("name", "metric", "direction", "eligible", "tie_break", "shares")


def register_config_section(name: str, parse: Callable[[Config], Any], *,
                            without_orders: Callable[[Mapping[str, Any]], bool] | None = None) -> ConfigSection:
    """Let ``[name]`` appear in the config, validated at load by ``parse``; a taken name raises.
    ``without_orders(raw section)``: true when the section lets the config stand without orders."""
    if name in CORE_KEYS:
        from centile.registry import RegistryError

        raise RegistryError(f"config section {name!r} belongs to the core; pick another name")
    return CONFIG_SECTIONS.add(name, ConfigSection(name, parse, without_orders))


def config_sections() -> Registry[ConfigSection]:
    """The registered sections, built-in capabilities loaded."""
    load_builtin()
    return CONFIG_SECTIONS


def suggest(word: str, choices: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest choice, or ""."""
    hit = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean {hit[0]!r}?)" if hit else ""


def check_keys(where: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Raise :class:`ConfigError` for the first key of ``given`` not in ``known``, with a suggestion."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{suggest(unknown[0], known)}; "
                          f"known keys: {', '.join(known)}")


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
    or files ``<name>*.parquet`` / ``<name>*.csv``. Tables not found are absent. ``data_dir``
    may be an fsspec URL (:mod:`centile.urls`).
    """
    if urls.is_url(data_dir):
        return _discover_url(str(data_dir))
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


def _discover_url(url: str) -> dict[str, TableSpec]:
    """:func:`discover` inside a folder URL."""
    if not urls.isdir(url):
        raise ConfigError(f"data = {url!r}: not a folder; give the URL of the folder that holds orders.parquet "
                          "(or orders/, orders.csv)")
    found: dict[str, TableSpec] = {}
    for name in TABLES:
        folder = urls.normal(urls.join(url, name))
        if urls.isdir(folder):
            found[name] = TableSpec(name, (folder,), "parquet")
            continue
        for fmt, patterns in (("parquet", (f"{name}*.parquet",)), ("csv", (f"{name}*.csv", f"{name}*.csv.gz"))):
            files = sorted({f for pat in patterns for f in urls.glob(urls.join(url, pat))})
            if files:
                found[name] = TableSpec(name, tuple(files), fmt)
                break
    return found


def resolve_paths(table: str, path: str, base: Path) -> tuple[str, ...]:
    """Expand a file, folder or glob (relative to ``base``; or an fsspec URL) into existing paths."""
    if urls.is_url(path):
        if any(ch in path for ch in "*?["):
            hits = urls.glob(path)
            if not hits:
                raise ConfigError(f"tables.{table}.path: the glob {path!r} matches no file")
            return tuple(hits)
        if not urls.exists(path):
            raise ConfigError(f"tables.{table}.path: {path} does not exist; fix the URL in the config")
        return (path,)
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


_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def memory_bytes(limit: str | None) -> int | None:
    """``'8GB'`` / ``'500 MiB'`` / ``'2e9'`` in bytes; None when absent or not understood."""
    if not limit:
        return None
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]i?b|b)?\s*", str(limit).lower())
    if not m:
        return None
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def _memory_limit(value: Any) -> str | None:
    """``memory_limit`` as given, once it reads as a size (the whole run's budget; see
    :func:`centile.backend.partitions.duckdb_memory`)."""
    if value in (None, ""):
        return None
    if not memory_bytes(str(value)):
        raise ConfigError(f"memory_limit {value!r} is not a size; use e.g. '8GB', '512MiB' or a byte count")
    return str(value)


def _as_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{where}: {value!r} is not true/false")


def _as_int(value: Any, where: str, *, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not an integer") from None
    if out < minimum:
        raise ConfigError(f"{where}: {out} must be at least {minimum}")
    if maximum is not None and out > maximum:
        raise ConfigError(f"{where}: {out} must be at most {maximum}")
    return out


def _table_from_toml(name: str, doc: Mapping[str, Any], base: Path,
                     discovered: Mapping[str, TableSpec]) -> TableSpec:
    if name not in CONTRACT:
        raise ConfigError(f"[tables.{name}]: unknown table{suggest(name, TABLES)}; the contract has "
                          f"{', '.join(TABLES)}")
    check_keys(f"[tables.{name}]", doc, ("path", "format", "columns", "filter", "timestamp_format", "csv",
                                         "null_strings", "duplicates", "timezone"))
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
    unknown = sorted(set(columns) - set(CONTRACT[name]))
    if unknown:
        raise ConfigError(f"[tables.{name}.columns]: {unknown[0]!r} is not a column of the contract"
                          f"{suggest(unknown[0], CONTRACT[name])}; {name} has {', '.join(CONTRACT[name])}")
    for k, v in columns.items():
        if not isinstance(v, str) or not v.strip():
            raise ConfigError(f"[tables.{name}.columns].{k}: expected a column name or SQL expression")
    if doc.get("filter"):
        check_expression(doc["filter"], f"[tables.{name}] filter")
    return TableSpec(name, paths, fmt, MappingProxyType(columns), doc.get("filter") or None,
                     doc.get("timestamp_format") or None, MappingProxyType(dict(doc.get("csv", {}))),
                     _null_strings(name, doc), _duplicates(name, doc), _timezone(name, doc))


def _null_strings(name: str, doc: Mapping[str, Any]) -> tuple[str, ...]:
    value = doc.get("null_strings", NULL_STRINGS)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[tables.{name}] null_strings = {value!r}: expected a list of texts read as NULL, "
                          f"e.g. {list(NULL_STRINGS)} (or [] to read every text as it is)")
    return tuple(dict.fromkeys(value))


def _duplicates(name: str, doc: Mapping[str, Any]) -> str:
    if "duplicates" not in doc:
        return "set_aside"
    value = doc["duplicates"]
    if name != "orders":
        raise ConfigError(f"[tables.{name}] duplicates: only [tables.orders] takes this key (exact duplicate "
                          "order lines); remove it here")
    if value not in DUPLICATES:
        raise ConfigError(f"[tables.orders] duplicates = {value!r}: expected one of {list(DUPLICATES)} "
                          "(\"set_aside\" puts exact duplicate lines into the rejects, \"keep\" keeps them)")
    return str(value)


@functools.cache
def time_zones() -> dict[str, str]:
    """The zone names DuckDB (ICU) knows, lower-cased -> as spelt (the engine converts with them)."""
    rows = _parser().execute("SELECT name FROM pg_timezone_names() ORDER BY name").fetchall()
    return {r[0].lower(): r[0] for r in rows}


def _timezone(name: str, doc: Mapping[str, Any]) -> str:
    """``[tables.<t>] timezone``: a zone name DuckDB knows, in its own spelling (default UTC)."""
    value = doc.get("timezone", DEFAULT_TIMEZONE)
    where = f"[tables.{name}] timezone = {value!r}"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a time zone name such as \"Europe/Berlin\" or \"UTC\"")
    zones = time_zones()
    hit = zones.get(value.strip().lower())
    if hit is None:
        close = difflib.get_close_matches(value.strip(), list(zones.values()), n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
            "use an IANA zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\""
        raise ConfigError(f"{where}: unknown time zone; {hint} (zoned timestamps of {name} are turned "
                          "into wall-clock times of this zone)")
    return hit


def _shares(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list | tuple) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) for s in value):
        raise ConfigError(f"{where} = {value!r}: expected a list of fractions, e.g. [0.01, 0.05]")
    shares = tuple(float(s) for s in value)
    _check_shares(shares, where)
    return shares


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} = {value!r}: expected a non-empty string")
    return value


def _scratch(value: Any) -> str | None:
    """``[backend] scratch`` (or ``CENTILE_SCRATCH``): a folder path (DuckDB spills there and the
    workers read the pieces there by path, so not an object-store URL), made absolute."""
    if value in (None, ""):
        return None
    text = _text(value, "[backend] scratch")
    if urls.is_url(text) and not text.startswith("file://"):
        raise ConfigError(f"[backend] scratch = {text!r} (or CENTILE_SCRATCH): the scratch folder must be a "
                          "path on a file system (every worker of a cluster mounts it at that path), not an "
                          "object store: DuckDB spills there and the workers read their pieces there by path")
    path = text[len("file://"):] if text.startswith("file://") else text
    return str(Path(path).expanduser().absolute())


def _clubs_from_toml(items: Any, default_shares: tuple[float, ...]) -> tuple[ClubSpec, ...]:
    if not isinstance(items, list):
        raise ConfigError("[clubs] club: write each club as a [[clubs.club]] table")
    clubs = []
    seen = set()
    for i, item in enumerate(items):
        where = f"[[clubs.club]] #{i + 1}"
        if not isinstance(item, Mapping) or "name" not in item or "metric" not in item:
            raise ConfigError(f"{where}: each club needs `name` and `metric`")
        name = str(item["name"])
        check_keys(f"{where} ({name})", item, CLUB_KEYS)
        if not name.replace("_", "").isalnum():
            raise ConfigError(f"{where}: club name {name!r} may use letters, digits and _ only")
        if name in seen:
            raise ConfigError(f"{where}: club {name!r} is defined twice")
        seen.add(name)
        direction = str(item.get("direction", "desc")).lower()
        if direction not in ("desc", "asc"):
            raise ConfigError(f"{where} ({name}): direction must be 'desc' (larger is better) or 'asc'")
        shares = _shares(item["shares"], f"{where} ({name}).shares") if "shares" in item else default_shares
        tie = item.get("tie_break", ())
        tie = (tie,) if isinstance(tie, str) else tuple(_text(t, f"{where} ({name}).tie_break") for t in tie)
        eligible = item.get("eligible") or None
        clubs.append(ClubSpec(name, _text(item["metric"], f"{where} ({name}).metric"), direction,
                              _text(eligible, f"{where} ({name}).eligible") if eligible else None, tie, shares))
    return tuple(clubs)


def _check_shares(shares: tuple[float, ...], where: str) -> None:
    if not shares or any(not (0 < s <= 1) for s in shares) or sum(shares) > 1:
        raise ConfigError(f"{where}: {list(shares)} must be fractions in (0, 1] summing to at most 1, "
                          "e.g. [0.01, 0.05]")


@functools.cache
def _parser() -> Any:
    """One in-memory DuckDB connection per process, used only to parse SQL (opening one per
    expression cost 14 ms each: 0.2 s of every config load)."""
    from centile.runtime import duckdb_connect

    return duckdb_connect()


def parse_sql(sql: str) -> dict[str, Any]:
    """DuckDB's syntax tree of ``sql`` as JSON (``error`` is true when it does not parse)."""
    import json

    return json.loads(_parser().execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchone()[0])


def check_expression(expr: Any, where: str) -> list[str]:
    """Check that ``expr`` is exactly one SQL scalar expression (or predicate) over columns, and
    return the column names it refers to.

    Config SQL is spliced into centile's queries, so it must not be able to end the
    statement and start another (``1=1); COPY ... TO 'x'; SELECT (1``), nor read a file or
    table through a subquery or a table function. Raises :class:`ConfigError` naming
    ``where`` otherwise.
    """
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{where} = {expr!r}: expected a SQL expression as a non-empty string")
    doc = parse_sql(f"SELECT ({expr}) AS centile_expression")
    if doc.get("error"):
        msg = str(doc.get("error_message") or "syntax error").splitlines()[0]
        raise ConfigError(f"{where} = {expr!r}: not a SQL expression ({msg})")
    statements = doc.get("statements") or []
    node = statements[0].get("node", {}) if len(statements) == 1 else {}
    if (len(statements) != 1 or node.get("type") != "SELECT_NODE" or len(node.get("select_list") or []) != 1
            or (node.get("from_table") or {}).get("type") not in (None, "EMPTY")
            or any(node.get(k) for k in ("where_clause", "having", "qualify", "sample"))
            or (node.get("group_expressions") or [])):
        raise ConfigError(f"{where} = {expr!r}: must be one SQL expression over the table's columns, "
                          "not several statements or clauses")
    found: list[str] = []

    def walk(n: Any) -> None:
        if isinstance(n, dict):
            cls = n.get("class")
            if cls == "SUBQUERY" or n.get("type") in ("TABLE_FUNCTION", "SUBQUERY"):
                raise ConfigError(f"{where} = {expr!r}: subqueries and table functions (e.g. read_csv) are not "
                                  "allowed in config SQL; refer to the table's columns only")
            if cls == "COLUMN_REF" and n.get("column_names"):
                found.append(str(n["column_names"][-1]))
            for v in n.values():
                walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)

    walk(node.get("select_list"))
    return list(dict.fromkeys(found))


def check_club_columns(cfg: Config, columns: Iterable[str] | None = None) -> None:
    """Every column a club metric, tie-breaker, eligibility or ``group_by`` names must exist in the
    customer table: ``columns`` when given (a feature table built elsewhere), else the columns the
    features and the stages that publish per-customer columns declare."""
    if columns is not None:
        names, patterns = {c: "features" for c in columns}, {}
    else:
        from centile.contract import customer_columns

        names, patterns = customer_columns()
    from centile.contract import is_customer_column

    exprs = [(f"[[clubs.club]] club {c.name}: {k}", e) for c in cfg.clubs
             for k, e in (("metric", c.metric), ("eligible", c.eligible),
                          *(("tie_break", t) for t in c.tie_break)) if e]
    if cfg.group_by:
        exprs.append(("[clubs] group_by", cfg.group_by))
    for where, expr in exprs:
        for col in check_expression(expr, where):
            if not is_customer_column(col, names, patterns):
                raise ConfigError(
                    f"{where} = {expr!r}: no customer column {col!r}{suggest(col, names)}; the customer table "
                    f"has {', '.join(sorted(names))}" + (f" and {', '.join(sorted(patterns))}" if patterns else ""))


def load_config(path: str | os.PathLike[str] | None = None, *, data: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None, feature_columns: Iterable[str] | None = None,
                **overrides: Any) -> Config:
    """Build the run configuration and validate every section of it.

    Precedence, lowest first: the TOML file at ``path``; ``CENTILE_*``
    environment variables (``CENTILE_DATA``, ``CENTILE_AS_OF``,
    ``CENTILE_STRICT``, ``CENTILE_THREADS``, ``CENTILE_MEMORY_LIMIT``); then
    ``data`` and keyword ``overrides`` (``as_of``, ``strict``, ``threads``,
    ``memory_limit``, ``strategy``, ``seed``, ``group_by``) as given on the
    command line. ``None`` overrides are ignored. ``feature_columns``: the
    columns of a feature table built elsewhere, which club metrics may use.

    Raises
    ------
    ConfigError
        An unknown section or key, a wrong type or value, or a club over a column no
        stage computes; the message names the file and the key.

    Examples
    --------
    >>> cfg = load_config(data="demo/data")                    # doctest: +SKIP
    >>> cfg = load_config("centile.toml", as_of="2024-01-01")  # doctest: +SKIP
    """
    source = str(path) if path is not None else None
    try:
        cfg = _load(path, data, os.environ if env is None else env, overrides)
        for spec in config_sections().items():
            cfg.settings(spec.name)
        check_club_columns(cfg, feature_columns)
    except ConfigError as exc:
        if source and not str(exc).startswith(source):
            raise ConfigError(f"{source}: {exc}") from None
        raise
    return cfg


def _load(path: str | os.PathLike[str] | None, data: str | os.PathLike[str] | None,
          env: Mapping[str, str], overrides: Mapping[str, Any]) -> Config:
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
    sections = config_sections().names()
    for key in doc:
        if key not in CORE_KEYS and key not in sections:
            known = [*CORE_KEYS, *sections]
            raise ConfigError(f"unknown section or key {key!r}{suggest(key, known)}; known: {', '.join(known)}")
    for key in ("tables", "features", "clubs", "backend", *sections):
        if key in doc and not isinstance(doc[key], Mapping):
            raise ConfigError(f"[{key}] must be a table (a TOML section), got {type(doc[key]).__name__} {doc[key]!r}")

    data_dir: Path | str | None = None
    if doc.get("data"):
        data_dir = str(doc["data"]) if urls.is_url(doc["data"]) else Path(doc["data"]).expanduser()
        data_dir = data_dir if isinstance(data_dir, str) or data_dir.is_absolute() else base / data_dir
    if env.get("CENTILE_DATA"):
        data_dir = env["CENTILE_DATA"] if urls.is_url(env["CENTILE_DATA"]) else Path(env["CENTILE_DATA"])
    if data is not None:
        data_dir = data if urls.is_url(data) else Path(data)
    discovered = discover(data_dir) if data_dir is not None else {}

    tables = dict(discovered)
    for name, tdoc in (doc.get("tables") or {}).items():
        if not isinstance(tdoc, Mapping):
            raise ConfigError(f"[tables.{name}] must be a table")
        tables[name] = _table_from_toml(name, tdoc, base, discovered)
    standalone = [sec.name for sec in config_sections().items() if sec.without_orders is not None
                  and isinstance(doc.get(sec.name), Mapping) and sec.without_orders(doc[sec.name])]
    if "orders" not in tables and not standalone:
        where = f"in {data_dir}" if data_dir else "(no --data folder and no [tables.orders] in the config)"
        raise ConfigError(f"no orders table found {where}; orders is required: put orders.parquet, "
                          "orders/ or orders.csv in the data folder, or set [tables.orders] path (a contact "
                          "plan from scored proposals alone needs no orders: set [steering] proposals)")

    settings: dict[str, Any] = {k: doc.get(k) for k in ("as_of", "strict", "threads", "memory_limit",
                                                        "partitions", "seed")}
    for key in ("as_of", "strict", "threads", "memory_limit", "partitions"):
        if env.get(f"CENTILE_{key.upper()}"):
            settings[key] = env[f"CENTILE_{key.upper()}"]
    feats = doc.get("features", {}) or {}
    check_keys("[features]", feats, FEATURE_KEYS)
    clubs_doc = doc.get("clubs", {}) or {}
    check_keys("[clubs]", clubs_doc, CLUBS_KEYS)
    settings["strategy"] = clubs_doc.get("strategy")
    settings["group_by"] = clubs_doc.get("group_by")
    backend_doc = doc.get("backend", {}) or {}
    check_keys("[backend]", backend_doc, BACKEND_KEYS)
    settings["backend"] = backend_doc.get("kind")
    settings["scheduler"] = backend_doc.get("scheduler")
    settings["buckets"] = backend_doc.get("buckets")
    settings["scratch"] = backend_doc.get("scratch")
    for key in ("backend", "scheduler", "buckets", "scratch"):
        if env.get(f"CENTILE_{key.upper()}"):
            settings[key] = env[f"CENTILE_{key.upper()}"]
    for k, v in overrides.items():
        if v is not None:
            settings[k] = v

    windows = Windows(
        _as_int(feats.get("window_6m", 182), "[features] window_6m", minimum=1),
        _as_int(feats.get("window_12m", 365), "[features] window_12m", minimum=1),
        _as_int(feats.get("window_24m", 730), "[features] window_24m", minimum=1),
    )
    default_shares = _shares(clubs_doc["shares"], "[clubs] shares") if "shares" in clubs_doc else (0.01, 0.05)
    if "club" in clubs_doc:
        clubs = _clubs_from_toml(clubs_doc["club"], default_shares)
    else:
        clubs = tuple(replace(c, shares=default_shares) for c in DEFAULT_CLUBS)
    strategy = str(settings.get("strategy") or "priority")
    if strategy not in ("priority", "best-rank"):
        raise ConfigError(f"[clubs] strategy = {strategy!r}: use 'priority' or 'best-rank'{suggest(strategy, ('priority', 'best-rank'))}")
    group_by = settings.get("group_by") or None
    if group_by is not None:
        _text(group_by, "[clubs] group_by")
    threads = settings.get("threads")
    partitions = settings.get("partitions")
    scheduler = _text(settings["scheduler"], "[backend] scheduler") if settings.get("scheduler") else None
    kind = _text(settings.get("backend") or ("dask" if scheduler else "duckdb"), "[backend] kind")
    if scheduler and kind == "duckdb":
        raise ConfigError(f"[backend] scheduler = {scheduler!r} is a Dask scheduler, but the backend is "
                          "duckdb (this process); set [backend] kind = \"dask\" (--backend dask) or drop "
                          "the scheduler")
    buckets = str(settings.get("buckets") or "auto")
    if buckets not in BUCKET_MODES:
        raise ConfigError(f"[backend] buckets = {buckets!r} (or CENTILE_BUCKETS): use one of "
                          f"{', '.join(BUCKET_MODES)}{suggest(buckets, BUCKET_MODES)}")
    backend = BackendSpec(kind, scheduler, buckets, _scratch(settings.get("scratch")))
    return Config(
        tables=MappingProxyType(tables),
        as_of=as_date(settings.get("as_of"), "as_of"),
        strict=_as_bool(settings.get("strict") or False, "strict"),
        windows=windows,
        top_categories=_as_int(feats.get("top_categories", 8), "[features] top_categories"),
        threads=None if threads in (None, "", 0, "0") else _as_int(threads, "threads", minimum=1),
        memory_limit=_memory_limit(settings.get("memory_limit")),
        partitions=None if partitions in (None, "", 0, "0") else _as_int(partitions, "partitions", minimum=1,
                                                                         maximum=4096),
        backend=backend,
        clubs=clubs,
        strategy=strategy,
        group_by=group_by,
        seed=_as_int(settings.get("seed") or 0, "seed"),
        source=source,
        sections=MappingProxyType({k: MappingProxyType(dict(doc[k])) for k in sections if k in doc}),
    )
