"""The Celery app: Redis broker and result backend from FERQUEUE_* settings, JSON only.

Start a worker with ``ferqueue worker --queues generate`` or the plain
``celery -A workers.celery_app worker -E -Q generate``. The worker's main process imports
no TensorFlow (it is not fork-safe); each pool child imports it lazily on its first task,
holds one Runtime (ledger, dataset and model caches) and starts with fresh DB connections.
"""

from __future__ import annotations

from celery import Celery, signals
from kombu import Queue

from ferqueue.config import Settings, load_settings
from ferqueue.errors import ConfigError

QUEUES = ("generate", "train", "evaluate")

# task names are the wire contract between the executor (ferqueue/executors.py) and workers
GENERATE_SHARD = "ferqueue.generate_shard"
MERGE_STORE = "ferqueue.merge_store"
TRAIN = "ferqueue.train"
EVALUATE = "ferqueue.evaluate"
ROUTES = {GENERATE_SHARD: "generate", MERGE_STORE: "generate", TRAIN: "train", EVALUATE: "evaluate"}

# a child is replaced after this many tasks, handing back TensorFlow's memory
MAX_TASKS_PER_CHILD = 200
# the hard time limit stays this far below the visibility timeout, so Redis never redelivers
# a task that is still running
TIME_LIMIT_MARGIN = 60
MIN_VISIBILITY_TIMEOUT = 2 * TIME_LIMIT_MARGIN


def celery_config(settings: Settings) -> dict:
    """The Celery settings derived from ferqueue's; see DESIGN.md, "Celery settings that matter"."""
    if settings.visibility_timeout < MIN_VISIBILITY_TIMEOUT:
        raise ConfigError(f"FERQUEUE_VISIBILITY_TIMEOUT={settings.visibility_timeout} is too short: it must "
                          f"exceed the longest task, at least {MIN_VISIBILITY_TIMEOUT} s")
    transport = {"visibility_timeout": settings.visibility_timeout}
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle payload from the broker could run code in the worker
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # ack after the task, requeue when its process dies: a lost shard is redone, never dropped
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.visibility_timeout - TIME_LIMIT_MARGIN,
        "task_soft_time_limit": settings.visibility_timeout - 2 * TIME_LIMIT_MARGIN,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_routes": {name: {"queue": queue, "routing_key": queue} for name, queue in ROUTES.items()},
        "task_default_queue": "generate",
        "task_create_missing_queues": False,
        "worker_max_tasks_per_child": MAX_TASKS_PER_CHILD,
        # events for Flower (workers also start with -E)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
    }


def make_app(settings: Settings | None = None) -> Celery:
    settings = settings or load_settings()
    app = Celery("ferqueue", include=["workers.tasks"])
    app.conf.update(celery_config(settings))
    return app


_apps: dict[tuple[str | None, str | None, int], Celery] = {}


def app_for(settings: Settings) -> Celery:
    """The app talking to ``settings``' broker: this module's app when it matches, else a cached new one."""
    if not settings.broker_url:
        raise ConfigError("no broker configured: set FERQUEUE_BROKER_URL (e.g. redis://localhost:6379/0) "
                          "to use Celery workers, or run the job in-process with --local")
    key = (settings.broker_url, settings.result_backend, settings.visibility_timeout)
    if (app.conf.broker_url, app.conf.result_backend, app.conf.broker_transport_options["visibility_timeout"]) == key:
        return app
    if key not in _apps:
        _apps[key] = make_app(settings)
    return _apps[key]


app = make_app()


@signals.worker_init.connect
def _refuse_to_start_unready(**_kwargs) -> None:
    """Stop a worker that would consume tasks it cannot run: no broker URL (Celery would fall
    back to amqp://localhost) or a ledger that is not migrated to head."""
    from ferqueue.db.session import dispose_engines, open_database

    settings = load_settings()
    try:
        if not settings.broker_url:
            raise ConfigError("FERQUEUE_BROKER_URL is not set: a worker needs the Redis broker URL")
        open_database(settings.database_url, migrate=False)
    except ConfigError as exc:
        # Celery logs and ignores an Exception raised in a signal handler; SystemExit stops it
        raise SystemExit(f"ferqueue worker: {exc}") from None
    finally:
        dispose_engines()  # the pool children open their own connections


@signals.worker_process_init.connect
def _fresh_child(**_kwargs) -> None:
    """A forked pool child drops the parent's pooled DB connections and runtime."""
    from ferqueue.db.session import dispose_engines
    from workers import tasks

    dispose_engines()
    tasks.reset_runtime()
