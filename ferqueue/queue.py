"""Celery, from the library's side: the configuration, the queues and task names (read from the
job registry), and the executor that sends units to the workers.

The deployment (``workers/``) builds its app with ``make_app`` and registers one thin task
per name in ``task_names()``; nothing here imports it. Task names and keyword arguments are
the wire contract between the two: ``ferqueue.generate_shard`` and ``ferqueue.evaluate_shard``
with ``job_id`` and ``shard_id``; ``ferqueue.merge_store``, ``ferqueue.aggregate_evaluation``
and ``ferqueue.train`` with ``job_id``. Sent by name, they read in Flower's task list as the
job and shard they serve.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from ferqueue.config import Settings
from ferqueue.db import ledger
from ferqueue.errors import ConfigError, TransientError
from ferqueue.jobs import Executor, InFlight, Unit, registered, run_unit
from ferqueue.jobs.execution import RETRY_BACKOFF, RETRY_BACKOFF_MAX, TRANSIENT_RETRIES, retried_if_transient
from ferqueue.jobs.supervise import Supervisor

# the module `celery -A` loads in a worker: it makes the app and registers the tasks
WORKER_APP = "workers.celery_app"
# a child is replaced after this many tasks, handing back TensorFlow's memory
MAX_TASKS_PER_CHILD = 200
# the soft time limit comes this long before the hard one (FERQUEUE_TASK_TIME_LIMIT)
TIME_LIMIT_MARGIN = 60
# Redis hands an unacknowledged message back to the queue after the visibility timeout: a
# message a dead worker had taken but not started comes back. A unit still running then is
# delivered twice, which its lease makes a no-op, so the timeout need not exceed any task.
MIN_VISIBILITY_TIMEOUT = 10
# how often (s) a worker looks for such messages in Redis
UNACKED_RESTORE_INTERVAL = 10
# sending a task while the broker restarts: tried again for about half a minute before it fails
PUBLISH_RETRY = {"max_retries": 15, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 3}


def is_amqp(url: str | None) -> bool:
    return bool(url) and url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")


def queues() -> tuple[str, ...]:
    """The queues the job kinds' units run on, each once."""
    return tuple(dict.fromkeys(k.queue for k in registered().values() if k.queue))


def routes() -> dict[str, str]:
    """Task name -> queue, for every unit of every kind."""
    out = {}
    for k in registered().values():
        for task in (k.shard_task, k.finish_task):
            if task:
                out[task] = k.queue
    return out


def task_names() -> dict[str, bool]:
    """Every task name, mapped to whether its unit is a shard (takes job id and shard id)."""
    out = {}
    for k in registered().values():
        if k.shard_task:
            out[k.shard_task] = True
        if k.finish_task:
            out[k.finish_task] = False
    return out


def celery_config(settings: Settings) -> dict:
    """The Celery settings derived from ferqueue's; see docs/distributed.md."""
    if settings.visibility_timeout < MIN_VISIBILITY_TIMEOUT:
        raise ConfigError(f"FERQUEUE_VISIBILITY_TIMEOUT={settings.visibility_timeout} is too short: give at least "
                          f"{MIN_VISIBILITY_TIMEOUT} s")
    if settings.task_time_limit <= 2 * TIME_LIMIT_MARGIN:
        raise ConfigError(f"FERQUEUE_TASK_TIME_LIMIT={settings.task_time_limit} is too short: give more than "
                          f"{2 * TIME_LIMIT_MARGIN} s")
    redis = {"visibility_timeout": settings.visibility_timeout,
             "unacked_restore_interval": UNACKED_RESTORE_INTERVAL, "unacked_restore_throttle": 1}
    # RabbitMQ: publisher confirms, so a task counts as sent only once the broker has it
    transport = {"confirm_publish": True} if is_amqp(settings.broker_url) else redis
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "broker_transport_options": transport,
        "result_backend_transport_options": redis,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits out a broker restart, however long
        "task_publish_retry_policy": PUBLISH_RETRY,
        # JSON only: a pickle payload from the broker could run code in the worker
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # ack after the task, requeue when its process dies: a lost shard is redone, never dropped
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit,
        "task_soft_time_limit": settings.task_time_limit - TIME_LIMIT_MARGIN,
        # durable queues and persistent messages (Celery's default delivery mode): on RabbitMQ they
        # outlive a broker restart; classic rather than quorum queues, which would need Celery's
        # native delayed delivery for the retries' countdowns (docs/distributed.md)
        "task_queues": [Queue(name, routing_key=name, durable=True) for name in queues()],
        "task_routes": {name: {"queue": queue, "routing_key": queue} for name, queue in routes().items()},
        "task_default_queue": queues()[0],
        "task_create_missing_queues": False,
        "worker_max_tasks_per_child": MAX_TASKS_PER_CHILD,
        # a pool child imports and starts TensorFlow before it reports up (workers/celery_app.py)
        "worker_proc_alive_timeout": 120,
        # events for Flower (workers also start with -E)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_expires": 7 * 24 * 3600,
        "result_extended": True,
    }


def task_options() -> dict:
    """How every task is registered (workers/tasks.py): an error that may pass reaches Celery as
    TransientError (``ferqueue.errors.transient`` decides, in run_unit) and is retried with
    exponential backoff and jitter; the ledger bounds a started unit's attempts."""
    return {"autoretry_for": (TransientError,), "retry_backoff": RETRY_BACKOFF,
            "retry_backoff_max": RETRY_BACKOFF_MAX, "retry_jitter": True, "max_retries": TRANSIENT_RETRIES}


def start_supervisor(rt, app: Celery) -> Supervisor | None:
    """The supervisor thread of a worker's main process (None when FERQUEUE_SUPERVISE_SECONDS=0)."""
    if rt.settings.supervise_seconds <= 0:
        return None
    return Supervisor(CeleryExecutor(rt, app), rt.settings.supervise_seconds).start()


def make_app(settings: Settings) -> Celery:
    """A Celery app talking to ``settings``' broker. It knows no tasks: it sends them by name.
    (A worker's app is made before its settings are checked: see workers/celery_app.py.)"""
    app = Celery("ferqueue")
    app.conf.update(celery_config(settings))
    return app


_apps: dict[tuple[str | None, str | None, int, int], Celery] = {}


def app_for(settings: Settings) -> Celery:
    """The app for ``settings``' broker, made once per process."""
    settings.require_broker()
    key = (settings.broker_url, settings.result_backend, settings.visibility_timeout, settings.task_time_limit)
    if key not in _apps:
        _apps[key] = make_app(settings)
    return _apps[key]


class CeleryExecutor(Executor):
    """Sends each unit as a task to its kind's queue; the workers run it with ``run_task``."""

    name = "celery"

    def __init__(self, rt, app: Celery | None = None):
        super().__init__(rt)
        self.app = app or app_for(rt.settings)

    def check_connection(self) -> None:
        """Fail fast, before a job is planned, when the broker or the result backend is down
        (RabbitMQ's rpc:// results travel over the broker's own connection)."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        client = getattr(self.app.backend, "client", None)  # the Redis result backend
        if client is not None:
            client.ping()

    def dispatch(self, unit: Unit, in_flight: InFlight = frozenset()) -> list[str]:
        if (unit.task, unit.key) in in_flight:
            return []
        result = self.app.send_task(unit.task, kwargs=unit.kwargs, queue=unit.queue, routing_key=unit.queue)
        return [result.id]

    def in_flight(self, timeout: float = 1.0) -> InFlight:
        """Work that live workers are running or hold reserved, asked over the broker."""
        inspect = self.app.control.inspect(timeout=timeout)
        held: set[tuple[str, int]] = set()
        for reply in (inspect.active() or {}, inspect.reserved() or {}):
            for tasks in reply.values():
                held.update(key for key in map(held_key, tasks) if key)
        return frozenset(held)


def held_key(task: dict) -> tuple[str, int] | None:
    """(task name, unit key) of a task a worker reports: a shard task's key is its shard id, the
    others' their job id. A task sent with positional arguments (job id[, shard id]) counts too."""
    kwargs = task.get("kwargs") or {}
    key = kwargs.get("shard_id", kwargs.get("job_id"))
    if key is None and task.get("args"):
        key = task["args"][-1]
    return (task["name"], int(key)) if key is not None else None


def run_task(rt, app: Celery, job_id: int, shard_id: int | None = None) -> dict:
    """What every Celery task does: run its unit; what follows is sent to the queues."""
    with retried_if_transient():  # the ledger may be away: the task is retried, not failed
        job = ledger.job(rt.db, job_id)
    return run_unit(CeleryExecutor(rt, app), Unit(job.kind, job_id, shard_id))
