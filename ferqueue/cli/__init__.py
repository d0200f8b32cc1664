"""`ferqueue ...`: the command line. It parses arguments, calls ferqueue.app and renders.

Each module adds its commands to the ``main`` group of ``ferqueue.cli.base``.
"""

from ferqueue.cli import admin, experiments, jobs, status  # noqa: F401  (they register their commands)
from ferqueue.cli.base import main

__all__ = ["main"]
