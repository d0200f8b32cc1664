"""`ferqueue store | db | info | worker | flower | completion`: stores, the schema, settings, the
processes and the shell's completion script."""

from __future__ import annotations

import os
import sys

import click

from ferqueue import app
from ferqueue.cli import render
from ferqueue.cli.base import Output, console, err_console, main, output_options
from ferqueue.config import load_settings
from ferqueue.errors import ConfigError


@main.group()
def store():
    """Inspect and verify adversarial stores."""


@store.command()
@click.argument("target")
def verify(target):
    """Check a store (a generation job id or a store path): checksums, shards, dtypes, ranges."""
    rt = app.open_runtime(write=False)
    job, opened, problems = app.verify_store(rt, target)
    if problems:
        for problem in problems:
            err_console.print(f"[red]✗[/red] {problem}")
        raise click.ClickException(f"store {opened.path} failed verification ({len(problems)} problems)")
    n = sum(row["n_examples"] for row in opened.summary())
    console.print(f"[green]✓[/green] store {opened.path}: {len(opened.attacks)} attacks, {n} examples, float32, "
                  "checksums match" if job else f"[green]✓[/green] store {opened.path}: {n} examples, internally sound")


PROVENANCE = ("model_sha256", "dataset_fingerprint", "split_fingerprint", "subset", "image_size")


@store.command()
@click.argument("target")
@output_options()
def show(target, out: Output):
    """What a store holds: attacks, parameters, counts, success rates, provenance."""
    rt = app.open_runtime(write=False)
    _job, opened = app.open_store(rt, target)
    provenance = {key: opened.attrs.get(key) for key in PROVENANCE}
    if not out.as_table:
        render.echo_json({"path": str(opened.path), "attacks": opened.summary(), **provenance})
        return
    console.print(render.store_table(opened.path, opened.summary(), out.wide))
    for key, value in provenance.items():
        console.print(f"{key}: {value}")


@store.command()
@click.argument("target")
@click.argument("out", type=click.Path(dir_okay=False))
def export(target, out):
    """Write a store (a generation job id or a store path) as one self-contained HDF5 file:
    every attack's images as float32 and every per-example field, readable with h5py alone."""
    rt = app.open_runtime(write=False)
    path, sha, size = app.export_store(rt, target, out)
    console.print(f"wrote {path}: {size:,} bytes, sha256 {sha[:12]}…")


@main.group()
def db():
    """Database schema (Alembic migrations)."""


@db.command()
def upgrade():
    """alembic upgrade head on the configured database."""
    from ferqueue.db.session import open_database

    database = open_database(load_settings().database_url, migrate=True)
    console.print(f"{database.safe_url} at revision {database.current_revision()}")


@db.command()
def current():
    """Show the database's migration revision."""
    from ferqueue.db.session import Database

    database = Database(load_settings().database_url)
    console.print(f"{database.safe_url} at revision {database.current_revision() or 'none'}")


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def info(fmt):
    """Show the effective settings and the devices TensorFlow sees (with the attacks' batch sizes)."""
    summary = app.settings_summary(load_settings())
    devices = app.device_summary()
    if fmt == "json":
        render.echo_json({**summary, **devices})
        return
    for key, value in summary.items():
        console.print(f"{key:>12}: {value}")
    for device in devices["devices"]:
        console.print(f"{'device':>12}: {device['name']} ({device['type']}"
                      + (f", {device['model']}" if device.get("model") else "") + ")")
    if not devices["accelerators"]:
        console.print(f"{'':>12}  no GPU visible to TensorFlow (built with CUDA: "
                      f"{'yes' if devices['built_with_cuda'] else 'no'}): attacks run on the CPU")
    batches = ", ".join(f"{name} {size}" for name, size in devices["attack_batch_sizes"].items())
    console.print(f"{'attack batch':>12}: {batches} images per pass"
                  + (" (the accelerator's sizes)" if devices["accelerators"] else " (the CPU's size)"))


# ---- processes: worker and flower -----------------------------------------------------------------


def _celery_argv(*args: str) -> list[str]:
    from ferqueue.queue import WORKER_APP

    return [sys.executable, "-m", "celery", "-A", WORKER_APP, *args]


@main.command()
@click.option("--queues", "-Q", help="Comma list of queues to consume. [all: generate, train, evaluate]")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Pool child processes.")
@click.option("--tf-threads", type=int, help="TensorFlow threads per child (sets FERQUEUE_TF_THREADS).")
@click.option("--hostname", "-n", help="Node name. [celery's default: celery@<host>]")
@click.option("--loglevel", "-l", default="info", show_default=True)
@click.option("--max-tasks-per-child", type=int, help="Replace a child after N tasks.")
@click.option("--dry-run", is_flag=True, help="Print the celery command line instead of running it.")
def worker(queues, concurrency, tf_threads, hostname, loglevel, max_tasks_per_child, dry_run):
    """Start a Celery worker (events on, for Flower) on the given queues."""
    from ferqueue.queue import queues as known_queues

    load_settings().require_broker()
    known = known_queues()
    names = [q.strip() for q in (queues or ",".join(known)).split(",") if q.strip()]
    unknown = [q for q in names if q not in known]
    if unknown or not names:
        raise ConfigError(f"unknown queue {', '.join(unknown) or repr(queues)}; choose from {', '.join(known)}")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
    argv = _celery_argv("worker", "-E", "-Q", ",".join(names), "-c", str(concurrency), "-l", loglevel)
    if hostname:
        argv += ["-n", hostname]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    if tf_threads is not None:
        os.environ["FERQUEUE_TF_THREADS"] = str(tf_threads)
    if dry_run:
        click.echo(" ".join(argv))
        return
    os.execv(argv[0], argv)  # the worker replaces this process: signals reach Celery directly


FLOWER_TASK_COLUMNS = "name,kwargs,state,received,started,runtime,worker,uuid"


@main.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--no-auth", is_flag=True, help="Serve Flower without a password (only on 127.0.0.1).")
@click.option("--dry-run", is_flag=True, help="Print the command line instead of running it.")
def flower(port, address, no_auth, dry_run):
    """Start Flower with basic auth from FERQUEUE_FLOWER_USER / FERQUEUE_FLOWER_PASSWORD.

    Every page asks for them, /metrics and /healthcheck included. Flower speaks plain HTTP:
    to serve other machines, put it behind a proxy that terminates TLS (docs/distributed.md).
    """
    settings = load_settings()
    settings.require_broker()
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    if no_auth:
        if address not in ("127.0.0.1", "localhost", "::1"):
            raise ConfigError(f"--no-auth with --address {address} would let anyone who reaches this machine see "
                              "and control the workers: serve on 127.0.0.1, or set FERQUEUE_FLOWER_USER and "
                              "FERQUEUE_FLOWER_PASSWORD")
    else:
        user, password = settings.flower_user, settings.flower_password
        if not user or not password:
            raise ConfigError("Flower needs basic auth: set FERQUEUE_FLOWER_USER and FERQUEUE_FLOWER_PASSWORD "
                              "(or pass --no-auth on 127.0.0.1)")
        if ":" in user or "," in user + password:
            raise ConfigError(f"FERQUEUE_FLOWER_USER {user!r} must not contain ':' and neither value may contain ','")
        # through the environment, not argv: a password on the command line shows in `ps`
        os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    # the task list shows each task's keyword arguments (job_id, shard_id) beside its name
    os.environ.setdefault("FLOWER_TASKS_COLUMNS", FLOWER_TASK_COLUMNS)
    argv = [sys.executable, "-m", "ferqueue.monitor", f"--port={port}", f"--address={address}"]
    if dry_run:
        click.echo(" ".join(argv) + ("" if no_auth else "  (basic auth from FLOWER_BASIC_AUTH)"))
        return
    os.execv(argv[0], argv)


COMPLETION_SHELLS = ("bash", "zsh", "fish")


@main.command()
@click.argument("shell", type=click.Choice(COMPLETION_SHELLS), required=False)
def completion(shell):
    """Print the shell's completion script (commands, options, choices and job ids).

    \b
    bash:  eval "$(ferqueue completion bash)"    (in ~/.bashrc)
    zsh:   eval "$(ferqueue completion zsh)"     (in ~/.zshrc)
    fish:  ferqueue completion fish > ~/.config/fish/completions/ferqueue.fish

    Without SHELL, the one $SHELL names.
    """
    from click.shell_completion import get_completion_class

    shell = shell or os.path.basename(os.environ.get("SHELL", ""))
    if shell not in COMPLETION_SHELLS:
        raise ConfigError(f"cannot tell the shell from SHELL={os.environ.get('SHELL', '')!r}: name one of "
                          f"{', '.join(COMPLETION_SHELLS)}, e.g. `ferqueue completion bash`")
    script = get_completion_class(shell)(main, {}, "ferqueue", "_FERQUEUE_COMPLETE").source()
    click.echo(script)
