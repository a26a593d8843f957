"""Locate and read the feature queries in ``sql/`` and quote identifiers and literals.

The ``.sql`` files ship inside the ``centile.sql`` package, so they are found
the same way from a clone (editable install) and from an installed wheel.
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def read_sql(name: str) -> str:
    """Text of ``sql/<name>.sql``."""
    path = resources.files("centile.sql").joinpath(f"{name}.sql")
    if not path.is_file():
        raise FileNotFoundError(f"centile is missing its SQL file {name}.sql; reinstall the package")
    return path.read_text()


def sql_names() -> list[str]:
    """Names of every shipped ``.sql`` file (without suffix)."""
    root = resources.files("centile.sql")
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".sql"))


def ident(name: str) -> str:
    """Quote an identifier for DuckDB (the one place user identifiers are quoted)."""
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: str) -> str:
    """Quote a string literal for DuckDB. Used only where DuckDB cannot bind a parameter
    (file paths inside view definitions)."""
    return "'" + str(value).replace("'", "''") + "'"
