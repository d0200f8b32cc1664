"""`ferqueue status | jobs | cancel | metrics`: what the ledger says of jobs, once, live or for Prometheus."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

import click
from rich.live import Live

from ferqueue import app
from ferqueue.cli import render
from ferqueue.cli.base import Output, console, main, output_options
from ferqueue.cli.options import job_argument
from ferqueue.db import ledger, queries
from ferqueue.vocabulary import DONE


def watch_job(rt, job_id: int, interval: float = 1.0, live: bool = True, wide: bool = False) -> str:
    """Wait until the job ends, its status view live on the console (unless not ``live``);
    returns its final status."""
    view = queries.job_view(rt.db, job_id)
    with Live(render.status_view(view, wide), console=console, refresh_per_second=4) if live else nullcontext() as shown:
        while not view["job"].final:
            time.sleep(interval)  # the ledger is polled; it sends no events
            view = queries.job_view(rt.db, job_id)
            if live:
                shown.update(render.status_view(view, wide))
    return view["job"].status


def print_status(rt, job_id: int, out: Output) -> None:
    view = queries.job_view(rt.db, job_id)
    render.emit(out, view, lambda wide: render.status_view(view, wide))


@main.command()
@job_argument
@click.option("--watch", "-w", is_flag=True, help="Keep the view live until the job finishes.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
@output_options()
def status(job_id, watch, interval, out: Output):
    """Per-shard (or per-step) progress of a job (with --format json: once it ends, with --watch)."""
    rt = app.open_runtime(write=False)
    if not watch:
        print_status(rt, job_id, out)
        return
    final = watch_job(rt, job_id, interval, live=out.as_table, wide=out.wide)
    if not out.as_table:
        print_status(rt, job_id, out)
    if final != DONE:
        raise click.ClickException(f"job {job_id} ended {final}")


@main.command()
@job_argument
@click.option("--attack", "part", help="One part: an attack key (fgsm-eps0.01), clean, or transfer:KEY.")
@click.option("--fell", is_flag=True, help="Only the examples the attack made wrong (and that were right clean).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many rows (0: all).")
@output_options(("table", "json", "csv"))
def outcomes(job_id, part, fell, limit, out: Output):
    """Every example's outcome in an evaluation job: which images fall, under which attack."""
    rt = app.open_runtime(write=False)
    rows = app.outcomes(rt, job_id, part, fell, limit or None)
    if out.fmt == "json":
        render.echo_json(rows)
    elif out.fmt == "csv":
        render.echo_csv(rows)
    else:
        console.print(render.outcomes_table(job_id, rows, out.wide))


@main.command(name="jobs")
@click.option("--limit", type=int, default=20, show_default=True)
@output_options()
def list_jobs(limit, out: Output):
    """Recent top-level jobs."""
    rt = app.open_runtime(write=False)
    rows = queries.jobs(rt.db, limit)
    render.emit(out, rows, lambda wide: render.jobs_table(rows, wide))


@main.command()
@job_argument
def cancel(job_id):
    """Cancel a job, its unfinished shards and its pipeline steps; queued tasks become no-ops."""
    changed = ledger.cancel_job(app.open_runtime(write=False).db, job_id)
    console.print(f"job {job_id}: {changed} jobs and shards cancelled" if changed
                  else f"job {job_id} had nothing left to cancel")


@main.command()
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Replace this file atomically (node_exporter's textfile collector reads *.prom) instead of "
                   "printing.")
def metrics(out):
    """Job and shard counts (by kind and status) and shard attempts, in Prometheus's text format.

    Run it every minute with --out into node_exporter's textfile folder; Flower's /metrics
    has Celery's own task and worker series.
    """
    from ferqueue.metrics import exposition, write_textfile

    text = exposition(queries.ledger_counts(app.open_runtime(write=False).db))
    if out:
        console.print(f"wrote {write_textfile(out, text)}")
    else:
        click.echo(text, nl=False)
