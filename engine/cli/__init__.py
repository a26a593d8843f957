"""The ``centile`` command line (Typer); engine imports happen inside the commands.

``app.py`` holds the shared options and the core commands; a capability with
commands of its own keeps them in ``cli/<capability>.py`` with a
``register(app)`` function, called here.
"""

import importlib

from centile.cli.app import app, main

#: capabilities whose commands live in their own module
for _name in ("steering", "attribution", "baskets", "warmup", "bench", "refresh", "cluster"):
    try:
        importlib.import_module(f"centile.cli.{_name}").register(app)
    except ModuleNotFoundError as _exc:
        if _exc.name != f"centile.cli.{_name}":
            raise

__all__ = ["app", "main"]
