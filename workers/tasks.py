"""Thin tasks: ids in, the same ferqueue.jobs function the local executor calls, outcome recorded.

Every work function records its own progress in the ledger (shard and job states, attempts,
worker, timings) and is idempotent: a redelivered task finds its shard or job done and does
nothing. What the tasks add is the distributed glue: the shard whose completion lets
``claim_merge`` win enqueues the merge (exactly once), and a finished child job advances its
pipeline and enqueues the steps that became ready.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ferqueue import jobs, ledger
from ferqueue.executors import CeleryExecutor
from ferqueue.runtime import Runtime
from workers.celery_app import EVALUATE, GENERATE_SHARD, MERGE_STORE, TRAIN, app

_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's Runtime, made on first use: workers check the schema, never migrate it."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(migrate=False)
    return _runtime


def reset_runtime() -> None:
    global _runtime
    _runtime = None


@contextmanager
def _recorded(job_id: int) -> Iterator[CeleryExecutor]:
    """Run a job's work; on an error, fail the job and let its pipeline record the failure."""
    executor = CeleryExecutor(runtime())
    try:
        yield executor
    except Exception as exc:
        ledger.fail_job(executor.rt.db, job_id, jobs._describe(exc))
        executor.advance_parent(job_id)
        raise


@app.task(name=GENERATE_SHARD)
def generate_shard(job_id: int, shard_id: int) -> dict:
    with _recorded(job_id) as executor:
        outcome = jobs.run_shard(executor.rt, shard_id)
        # the last shard to finish wins the claim; every later claim (and redelivery) loses
        if ledger.claim_merge(executor.rt.db, job_id):
            outcome["merge_task"] = executor.enqueue_merge(job_id)
    return outcome


def _job_step(job_id: int, work: Callable[[Runtime, int], dict]) -> dict:
    """Run a whole job's work function, then advance its pipeline to what became ready."""
    with _recorded(job_id) as executor:
        outcome = work(executor.rt, job_id)
        executor.advance_parent(job_id)
    return outcome


@app.task(name=MERGE_STORE)
def merge_store(job_id: int) -> dict:
    return _job_step(job_id, jobs.run_claimed_merge)


@app.task(name=TRAIN)
def train(job_id: int) -> dict:
    return _job_step(job_id, jobs.run_train)


@app.task(name=EVALUATE)
def evaluate(job_id: int) -> dict:
    return _job_step(job_id, jobs.run_evaluate)
