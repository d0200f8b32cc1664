"""The ``ferqueue`` group, its consoles and progress bars, and the one way errors reach the user."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import click  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from ferqueue.errors import FerqueueError  # noqa: E402

# Off a terminal rich would wrap tables at 80 columns; results tables need more.
_width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "180"))
console = Console(width=_width)
err_console = Console(stderr=True, width=_width)


class FerqueueGroup(click.Group):
    """Every error reaches the user as one line and exit status 1: ferqueue's own errors (bad
    input, the environment) as their message, anything else as its type and message with a
    hint. ``--debug`` lets the traceback through."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except FerqueueError as exc:
            if ctx.meta.get("ferqueue.debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence of a command line
            if ctx.meta.get("ferqueue.debug"):
                raise
            message = " ".join(str(exc).split()) or "(no message)"
            raise click.ClickException(f"{type(exc).__name__}: {message} (`ferqueue --debug ...` shows the "
                                       "traceback)") from None


class RichProgress:
    """A ``(label, done, total)`` callback drawing one bar per label."""

    def __init__(self, target: Console | None = None, quiet: bool = False):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<42}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=target or console, disable=quiet)
        self.tasks: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)

    def loading(self, name: str):
        """A ``(done, total)`` callback for loading the dataset ``name``."""
        return lambda done, total: self(f"load {name}", done, total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()


@click.group(cls=FerqueueGroup)
@click.version_option(package_name="ferqueue")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """ferqueue: measure and harden facial-expression-recognition models against adversarial attacks."""
    ctx.meta["ferqueue.debug"] = debug
