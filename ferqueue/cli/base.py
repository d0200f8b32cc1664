"""The ``ferqueue`` group, its consoles, output options and progress bars, and the one way
errors reach the user."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

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
from sqlalchemy.exc import DBAPIError  # noqa: E402

from ferqueue import logs  # noqa: E402
from ferqueue.db.session import database_error  # noqa: E402
from ferqueue.errors import FerqueueError  # noqa: E402

# Every table fits this many columns unless --wide; off a terminal, it is also the width
# rich lays text out in (it would otherwise use 80), unless COLUMNS says otherwise.
TABLE_WIDTH = 120
# --wide off a terminal: wide enough that no table is squeezed
WIDE_WIDTH = 1000

console = Console()
err_console = Console(stderr=True)


def set_width(wide: bool = False) -> None:
    """Lay out for a terminal's own width, or off one for COLUMNS (default TABLE_WIDTH)."""
    for target in (console, err_console):
        if target.is_terminal:
            target.width = None
        else:
            target.width = WIDE_WIDTH if wide else int(os.environ.get("COLUMNS") or TABLE_WIDTH)


@dataclass(frozen=True)
class Output:
    """How a command prints its tables: ``fmt`` table, json (or csv); ``wide``: every column."""

    fmt: str = "table"
    wide: bool = False

    @property
    def as_table(self) -> bool:
        return self.fmt == "table"

    @property
    def chatter(self) -> Console:
        """Where lines other than the result go: stdout beside tables, stderr beside JSON."""
        return console if self.as_table else err_console


def output_options(formats: tuple[str, ...] = ("table", "json")) -> Callable:
    """``--format`` and ``--wide`` for a command that prints tables; it receives ``out: Output``."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapper(*args, fmt: str, wide: bool, **kwargs):
            set_width(wide)
            return command(*args, out=Output(fmt, wide), **kwargs)

        wrapper = click.option("--wide", is_flag=True,
                               help=f"Show every column (tables fit {TABLE_WIDTH} columns without it).")(wrapper)
        return click.option("--format", "fmt", type=click.Choice(formats), default="table", show_default=True,
                            help="table for people, " + " or ".join(formats[1:]) + " for programs.")(wrapper)

    return decorate


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
        except DBAPIError as exc:
            if ctx.meta.get("ferqueue.debug"):
                raise
            raise click.ClickException(database_error(exc)) from None
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
@click.option("--verbose", "-v", is_flag=True, help="Let TensorFlow's, absl's and Keras's log lines through.")
@click.option("--debug", is_flag=True, help="Show the traceback of an error instead of one line.")
@click.pass_context
def main(ctx: click.Context, verbose: bool, debug: bool) -> None:
    """ferqueue: measure and harden facial-expression-recognition models against adversarial attacks."""
    ctx.meta["ferqueue.debug"] = debug
    logs.configure(verbose)
    set_width()
