"""The supervisor: re-enqueues units whose lease expired, so that work lost with a worker or a
host is done again without a person and without waiting for the broker's visibility timeout.

It runs as a thread in the main process of every worker (``workers/celery_app.py`` starts it
when the worker is ready): no extra process to deploy, and no single point of failure, since
any surviving worker supervises the others. Several supervisors see the same expired lease;
the ledger settles it: each expired unit is reclaimed by one conditional UPDATE (its lease
cleared and a new deadline set) before it is sent again, so exactly one of them re-enqueues it.
A unit that used up FERQUEUE_MAX_ATTEMPTS fails instead, and its job names it and why.

What it covers: a running shard or finishing unit whose worker stopped renewing (killed, its
host gone, cut off from the database); a unit released after an error that may pass, whose
retry never came; a finishing unit claimed by a shard whose worker died before sending it.
What it does not: tasks still waiting in a queue that the broker lost (no lease yet):
``ferqueue resume`` re-enqueues those.
"""

from __future__ import annotations

import logging
import os
import threading

from ferqueue.db import ledger
from ferqueue.errors import describe
from ferqueue.jobs.execution import Executor, Unit, complete, gave_up, shard_label
from ferqueue.jobs.registry import kind
from ferqueue.vocabulary import RUNNING

log = logging.getLogger("ferqueue.supervisor")

# A worker's main process forks its pool children (a killed one is replaced at once) while this
# thread may be inside SQLAlchemy, the database driver or kombu, holding their locks: a child
# forked then inherits those locks, held for ever, and hangs on its first query (seen under load:
# SQLAlchemy's mapper-configuration lock). So a sweep holds _quiet, and a fork waits for it.
_quiet = threading.Lock()
_fork_holds = False
_forks_guarded = False
FORK_WAIT_SECONDS = 120  # a sweep stuck longer than this (a database away) lets the fork go on


def _before_fork() -> None:
    global _fork_holds
    _fork_holds = _quiet.acquire(timeout=FORK_WAIT_SECONDS)


def _after_fork_in_parent() -> None:
    global _fork_holds
    if _fork_holds:
        _fork_holds = False
        _quiet.release()


def _after_fork_in_child() -> None:
    global _quiet, _fork_holds
    _quiet, _fork_holds = threading.Lock(), False  # the child's own, free: it has no sweep under way


def guard_forks() -> None:
    """Make every later fork of this process wait for a sweep under way (once per process)."""
    global _forks_guarded
    if not _forks_guarded:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
        _forks_guarded = True


def sweep(executor: Executor) -> list[str]:
    """One pass: every expired unit re-enqueued (or given up); what was done, in words."""
    rt = executor.rt
    db, settings = rt.db, rt.settings
    done = []
    for shard, job_kind in ledger.expired_shards(db):
        unit = Unit(job_kind, shard.job_id, shard.id)
        what = f"job {shard.job_id} {shard_label(shard)}"
        lost = f"attempt {shard.attempts} on {shard.worker} was lost: its lease expired" \
            if shard.status == RUNNING else (shard.error or "it was not restarted in time")
        if shard.attempts >= settings.max_attempts:
            error = gave_up(what, shard.attempts, lost)
            if ledger.give_up_shard(db, shard.id, settings.max_attempts, lost):
                complete(executor, unit, error)
                done.append(f"failed {what}: {error}")
        elif ledger.reclaim_shard(db, shard.id, lost, settings.lease_seconds):
            executor.dispatch(unit)
            done.append(f"re-enqueued {what}: {lost}")
    for job in ledger.expired_jobs(db):
        job_kind = kind(job.kind)
        if job_kind.composite:
            continue
        unit = Unit(job.kind, job.id)
        what = f"the {job_kind.finish_name} of job {job.id}"
        lost = f"attempt {job.attempts} was lost: its lease expired" if job.lease_owner else \
            (job.error or "it was not started in time")
        if job.attempts >= settings.max_attempts:
            error = gave_up(what, job.attempts, lost)
            if ledger.give_up_job(db, job.id, settings.max_attempts, describe(error)):
                complete(executor, unit, error)
                done.append(f"failed {what}: {error}")
        elif ledger.reclaim_job(db, job.id, lost, settings.lease_seconds):
            executor.dispatch(unit)
            done.append(f"re-enqueued {what}: {lost}")
    return done


class Supervisor:
    """``sweep`` every ``period`` seconds on a daemon thread until ``stop``. A sweep that fails
    (the database or the broker is away) is logged and tried again at the next period; what it
    had reclaimed but could not send is reclaimed again once its new deadline passes."""

    def __init__(self, executor: Executor, period: float):
        self.executor = executor
        self.period = period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ferqueue-supervisor", daemon=True)

    def start(self) -> Supervisor:
        guard_forks()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.period + 10)

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            try:
                with _quiet:
                    lines = sweep(self.executor)
                for line in lines:
                    log.warning("supervisor: %s", line)
            except Exception as exc:  # noqa: BLE001 - the next period tries again
                log.warning("supervisor: sweep failed, trying again in %s s: %s", self.period, exc)
