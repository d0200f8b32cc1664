"""The Celery app of a ferqueue worker, its per-process runtime and its signal handlers.

Start a worker with ``ferqueue worker --queues generate`` or the plain
``celery -A workers.celery_app worker -E -Q generate``. The worker's main process imports
no TensorFlow (it is not fork-safe); each pool child imports it lazily on its first task,
holds one Runtime (ledger, dataset and model caches) and starts with fresh DB connections.
The main process runs the supervisor (``ferqueue.jobs.supervise``): every worker re-enqueues
work whose lease expired.
"""

from __future__ import annotations

import faulthandler
import signal
import sys

from celery import signals

from ferqueue.config import load_settings
from ferqueue.errors import ConfigError
from ferqueue.queue import make_app, start_supervisor
from ferqueue.runtime import Runtime

app = make_app(load_settings())
app.conf.include = ["workers.tasks"]

_runtime: Runtime | None = None
_supervisor = None


def runtime() -> Runtime:
    """This process's Runtime, made on first use: workers check the schema, never migrate it."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(migrate=False)
    return _runtime


def reset_runtime() -> None:
    global _runtime
    _runtime = None


def _stacks_on_sigusr2() -> None:
    """``kill -USR2`` prints every thread's Python stack to the worker's real stderr (its log):
    what a stuck worker is doing, without stopping it. (Not USR1: pool children take it as the
    soft time limit, and the main process as Celery's own, logged, stack dump.)"""
    faulthandler.register(signal.SIGUSR2, file=sys.__stderr__, all_threads=True)


@signals.worker_init.connect
def _refuse_to_start_unready(**_kwargs) -> None:
    """Stop a worker that would consume tasks it cannot run: no broker URL (Celery would fall
    back to amqp://localhost) or a ledger that is not migrated to head."""
    from ferqueue.db.session import dispose_engines, open_database

    _stacks_on_sigusr2()

    settings = load_settings()
    try:
        settings.require_broker()
        open_database(settings.database_url, migrate=False)
    except ConfigError as exc:
        # Celery logs and ignores an Exception raised in a signal handler; SystemExit stops it
        raise SystemExit(f"ferqueue worker: {exc}") from None
    finally:
        dispose_engines()  # the pool children open their own connections


@signals.worker_process_init.connect
def _fresh_child(**_kwargs) -> None:
    """A forked pool child drops the parent's pooled DB connections and runtime, and warms up
    (TensorFlow imported and started) before its first task: a job's first shard does not pay it."""
    from ferqueue.db.session import dispose_engines

    _stacks_on_sigusr2()
    dispose_engines()
    reset_runtime()
    runtime().warm_up()


@signals.worker_ready.connect
def _supervise(**_kwargs) -> None:
    """The main process (no TensorFlow there) supervises the cluster's leases on a thread, with
    a runtime of its own (the pool children were forked before it exists)."""
    global _supervisor
    _supervisor = start_supervisor(Runtime(migrate=False), app)


@signals.worker_shutdown.connect
def _stop_supervising(**_kwargs) -> None:
    if _supervisor is not None:
        _supervisor.stop()
