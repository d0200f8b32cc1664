"""The Celery executor: it enqueues what the ledger says is unfinished; workers run it.

The same ferqueue.jobs functions run in both executors: ``LocalExecutor`` calls them in
this process, ``CeleryExecutor`` sends ids to the thin tasks of ``workers.tasks``, which
call them in a worker. The ledger, not the broker, decides what is left to do, so
``submit`` doubles as ``resume``: after a broker loss it re-enqueues exactly what is unfinished.
"""

from __future__ import annotations

from ferqueue import jobs, ledger
from ferqueue.db.models import Job
from ferqueue.errors import ConfigError, LedgerError
from ferqueue.ledger import ACTIVE_JOB_STATES
from ferqueue.runtime import Runtime

# (task name, job or shard id) of work that a worker holds right now
InFlight = frozenset[tuple[str, int]]


def executor_for(rt: Runtime, local: bool = False, progress: jobs.Progress | None = None):
    """The Celery executor when a broker is configured, the local one when asked for."""
    if local:
        return jobs.LocalExecutor(rt, progress) if progress else jobs.LocalExecutor(rt)
    if not rt.settings.broker_url:
        raise ConfigError("no broker configured: set FERQUEUE_BROKER_URL (e.g. redis://localhost:6379/0) to "
                          "submit jobs to Celery workers, or pass --local to run the job in this process")
    return CeleryExecutor(rt)


class CeleryExecutor:
    """Sends a job's unfinished work to the Celery queues: shards to ``generate``, training to
    ``train``, evaluations to ``evaluate``; a pipeline is advanced and its ready steps sent."""

    name = "celery"

    def __init__(self, rt: Runtime, app=None):
        from workers.celery_app import app_for  # Celery is needed only where jobs are enqueued

        self.rt = rt
        self.app = app or app_for(rt.settings)

    def check_connection(self) -> None:
        """Fail fast, before a job is planned, when the broker or the result backend is down."""
        with self.app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)
        client = getattr(self.app.backend, "client", None)  # the Redis result backend
        if client is not None:
            client.ping()

    def submit(self, job_id: int, in_flight: InFlight = frozenset()) -> list[str]:
        """Enqueue everything of ``job_id`` the ledger says is unfinished and no worker holds;
        returns the task ids sent. Safe to repeat: a duplicate task finds its work done."""
        from workers import celery_app as names

        job = ledger.get(self.rt.db, Job, job_id)
        if job.status not in ACTIVE_JOB_STATES:
            return []
        if job.kind in ("pipeline", "compare"):
            jobs.advance_pipeline(self.rt, job_id)
            sent = []
            for child in ledger.children(self.rt.db, job_id):
                sent += self.submit(child.id, in_flight)
            return sent
        if job.kind == "train":
            return self._send(names.TRAIN, job_id, in_flight)
        if job.kind == "evaluate":
            return self._send(names.EVALUATE, job_id, in_flight)
        if job.kind != "generate":
            raise LedgerError(f"job {job_id} has unknown kind {job.kind}")
        if job.status == "merging":  # claimed, but its merge task was lost or is running
            return self._send(names.MERGE_STORE, job_id, in_flight)
        shards = [s for s in ledger.unfinished_shards(self.rt.db, job_id) if s.status != "cancelled"]
        if not shards and ledger.claim_merge(self.rt.db, job_id):  # the last shard's task died before claiming
            return self._send(names.MERGE_STORE, job_id, in_flight)
        sent = []
        for shard in shards:
            sent += self._send(names.GENERATE_SHARD, shard.id, in_flight, (job_id, shard.id))
        return sent

    def advance_parent(self, job_id: int) -> list[str]:
        """After a child job finished or failed: create its pipeline's next steps and send them.

        Only the steps this call created are sent: two children finishing together cannot
        both create (or send) a step, the ledger's unique (parent, step) decides.
        """
        job = ledger.get(self.rt.db, Job, job_id)
        if job.parent_id is None:
            return []
        sent = []
        for child_id in jobs.advance_pipeline(self.rt, job.parent_id):
            sent += self.submit(child_id)
        return sent

    def enqueue_merge(self, job_id: int) -> str:
        from workers.celery_app import MERGE_STORE

        return self._send(MERGE_STORE, job_id)[0]

    def in_flight(self, timeout: float = 1.0) -> InFlight:
        """Work that live workers are running or hold reserved, asked over the broker."""
        inspect = self.app.control.inspect(timeout=timeout)
        held: set[tuple[str, int]] = set()
        for reply in (inspect.active() or {}, inspect.reserved() or {}):
            for tasks in reply.values():
                for task in tasks:
                    args = task.get("args") or []
                    if args:  # a shard task's key is its shard id, the others' their job id
                        held.add((task["name"], int(args[-1])))
        return frozenset(held)

    def _send(self, task: str, key: int, in_flight: InFlight = frozenset(), args: tuple | None = None) -> list[str]:
        if (task, key) in in_flight:
            return []
        from workers.celery_app import ROUTES

        queue = ROUTES[task]
        result = self.app.send_task(task, args=list(args or (key,)), queue=queue, routing_key=queue)
        return [result.id]
