"""The ``centile`` command line (Typer); engine imports happen inside the commands."""

from centile.cli.app import app, main

__all__ = ["app", "main"]
