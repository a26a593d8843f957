"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class CentileError(Exception):
    """Base class: every error centile raises on purpose (a user or data error).

    The CLI exits with ``exit_code`` 1 for all of them; 2 is reserved for
    internal errors (bugs), 0 for success.
    """

    exit_code = 1


class ConfigError(CentileError):
    """The configuration file, an option or an environment variable is invalid."""


class InputError(CentileError):
    """An input table is missing, unreadable or lacks a required column."""


class ValidationError(InputError):
    """Input rows violate the data contract and ``--strict`` is on."""


class OutputError(CentileError):
    """An output folder cannot be written or a previous run cannot be read."""


class QueryError(CentileError):
    """An ad-hoc SQL query failed."""


class BackendError(CentileError):
    """The compute backend failed: a cluster scheduler cannot be reached, a worker died or raised
    during a partition, or the workers run another centile than the client."""
