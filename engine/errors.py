"""Typed errors raised by the library; only the CLI turns them into messages and exit codes."""

from __future__ import annotations


class CentileError(Exception):
    """Base class: every error centile raises on purpose. ``exit_code`` is used by the CLI."""

    exit_code = 1


class ConfigError(CentileError):
    """The configuration file, an option or an environment variable is invalid."""

    exit_code = 2


class InputError(CentileError):
    """An input table is missing, unreadable or lacks a required column."""

    exit_code = 3


class ValidationError(InputError):
    """Input rows violate the data contract and ``--strict`` is on."""

    exit_code = 4


class OutputError(CentileError):
    """An output folder cannot be written or a previous run cannot be read."""

    exit_code = 5


class QueryError(CentileError):
    """An ad-hoc SQL query failed."""

    exit_code = 6
