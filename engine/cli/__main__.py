"""``python -m centile.cli``: the same as the ``centile`` command."""

from centile.cli.app import main

main()
