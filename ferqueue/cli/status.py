"""`ferqueue status | jobs`: what the ledger says of jobs, once or live."""

from __future__ import annotations

import time

import click
from rich.live import Live

from ferqueue import app
from ferqueue.cli import render
from ferqueue.cli.base import console, main
from ferqueue.db import ledger, queries
from ferqueue.vocabulary import DONE


def watch_job(rt, job_id: int, interval: float = 1.0) -> str:
    """Keep the job's status view live until it ends; returns its final status."""
    view = queries.job_view(rt.db, job_id)
    with Live(render.status_view(view), console=console, refresh_per_second=4) as live:
        while not view["job"].final:
            time.sleep(interval)  # the ledger is polled; it sends no events
            view = queries.job_view(rt.db, job_id)
            live.update(render.status_view(view))
    return view["job"].status


@main.command()
@click.argument("job_id", type=int)
@click.option("--watch", "-w", is_flag=True, help="Keep the view live until the job finishes.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
def status(job_id, watch, interval):
    """Per-shard (or per-step) progress of a job."""
    rt = app.open_runtime(write=False)
    if not watch:
        console.print(render.status_view(queries.job_view(rt.db, job_id)))
        return
    final = watch_job(rt, job_id, interval)
    if final != DONE:
        raise click.ClickException(f"job {job_id} ended {final}")


@main.command()
@click.argument("job_id", type=int)
@click.option("--attack", "part", help="One part: an attack key (fgsm-eps0.01), clean, or transfer:KEY.")
@click.option("--fell", is_flag=True, help="Only the examples the attack made wrong (and that were right clean).")
@click.option("--limit", type=int, default=50, show_default=True, help="At most this many rows (0: all).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
def outcomes(job_id, part, fell, limit, fmt):
    """Every example's outcome in an evaluation job: which images fall, under which attack."""
    rt = app.open_runtime(write=False)
    rows = app.outcomes(rt, job_id, part, fell, limit or None)
    if fmt == "json":
        render.echo_json(rows)
    elif fmt == "csv":
        render.echo_csv(rows)
    else:
        console.print(render.outcomes_table(job_id, rows))


@main.command(name="jobs")
@click.option("--limit", type=int, default=20, show_default=True)
def list_jobs(limit):
    """Recent top-level jobs."""
    rt = app.open_runtime(write=False)
    console.print(render.jobs_table(queries.jobs(rt.db, limit)))


@main.command()
@click.argument("job_id", type=int)
def cancel(job_id):
    """Cancel a job, its unfinished shards and its pipeline steps; queued tasks become no-ops."""
    changed = ledger.cancel_job(app.open_runtime(write=False).db, job_id)
    console.print(f"job {job_id}: {changed} jobs and shards cancelled" if changed
                  else f"job {job_id} had nothing left to cancel")
