"""Running a job's units, the same way on every executor, and settling what each unit's end means.

``run_unit`` is the one library call behind every unit of work: the local executor calls it
in this process, a Celery task calls it in a worker. ``complete`` is the one place where a
unit's end is settled: the last shard claims the job's finishing unit, a finished or failed
job advances its pipeline, and a failure is recorded. The two executors differ only in
``dispatch``: the local one runs the unit now, the Celery one sends it as a task.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ferqueue.db import ledger
from ferqueue.errors import describe
from ferqueue.jobs.registry import Progress, kind, no_progress
from ferqueue.vocabulary import CANCELLED, DONE, MERGING, PENDING, RUNNING

# (task name, job or shard id) of work that a worker holds right now
InFlight = frozenset[tuple[str, int]]


@dataclass(frozen=True)
class Unit:
    """One unit of a job: a shard, or (shard_id None) the job's finishing step."""

    kind: str
    job_id: int
    shard_id: int | None = None

    @property
    def task(self) -> str:
        job_kind = kind(self.kind)
        return job_kind.shard_task if self.shard_id is not None else job_kind.finish_task

    @property
    def queue(self) -> str:
        return kind(self.kind).queue

    @property
    def key(self) -> int:
        """What identifies the unit among tasks of its name: the shard id, or the job id."""
        return self.shard_id if self.shard_id is not None else self.job_id

    @property
    def kwargs(self) -> dict[str, int]:
        """The task's arguments, by name: Flower's task list shows which job and shard it serves."""
        return {"job_id": self.job_id} if self.shard_id is None else {"job_id": self.job_id, "shard_id": self.shard_id}


class Executor:
    """Sends the unfinished units of a job somewhere to run. The ledger, not the executor,
    decides what is unfinished, so ``submit`` doubles as ``resume``."""

    name: str

    def __init__(self, rt, progress: Progress = no_progress):
        self.rt = rt
        self.progress = progress

    def dispatch(self, unit: Unit, in_flight: InFlight = frozenset()) -> list[str]:
        """Run or send one unit; returns the task ids sent."""
        raise NotImplementedError

    def submit(self, job_id: int, in_flight: InFlight = frozenset()) -> list[str]:
        """Dispatch everything of ``job_id`` the ledger says is unfinished and no worker holds.
        Safe to repeat: a duplicate unit finds its work done and does nothing."""
        db = self.rt.db
        job = ledger.job(db, job_id)
        if not job.active:
            return []
        job_kind = kind(job.kind)
        if job_kind.composite:
            job_kind.advance(self.rt, job)
            return [task for child in ledger.children(db, job_id) for task in self.submit(child.id, in_flight)]
        finishing = Unit(job.kind, job_id)
        if job.status == MERGING:  # claimed, but its finishing unit was lost or is running
            return self.dispatch(finishing, in_flight)
        if not job_kind.sharded:
            return self.dispatch(finishing, in_flight)
        shards = [s for s in ledger.unfinished_shards(db, job_id) if s.status != CANCELLED]
        if not shards:  # the last shard's unit ended before it could claim
            return self.dispatch(finishing, in_flight) if ledger.claim_finish(db, job_id) else []
        return [task for s in shards for task in self.dispatch(Unit(job.kind, job_id, s.id), in_flight)]


class LocalExecutor(Executor):
    """Runs every unit in this process, at once, one after another."""

    name = "local"

    def dispatch(self, unit: Unit, in_flight: InFlight = frozenset()) -> list[str]:
        outcome = run_unit(self, unit)
        if unit.shard_id is not None and "index" in outcome:
            self.progress(f"job {unit.job_id} shards", outcome["index"] + 1, outcome["n_shards"])
        return []

    def run(self, job_id: int) -> None:
        """Run a job (a whole pipeline) to its end in this process."""
        self.submit(job_id)


def run_unit(executor: Executor, unit: Unit) -> dict:
    """Run one unit and settle its end; returns a small JSON outcome (a Celery task's result)."""
    rt = executor.rt
    job_kind = kind(unit.kind)
    try:
        if unit.shard_id is not None:
            outcome = _run_shard(rt, job_kind, unit, executor.progress)
        else:
            outcome = _run_finish(rt, job_kind, unit.job_id, executor.progress)
    except BaseException as exc:
        complete(executor, unit, exc)
        raise
    # settled even when the unit found its work done: a redelivery after a worker died between
    # recording and settling must still claim the finishing unit or advance the pipeline
    sent = complete(executor, unit)
    if sent and unit.shard_id is not None:
        outcome["finish_task"] = sent[0]
    return outcome


def complete(executor: Executor, unit: Unit, error: BaseException | None = None) -> list[str]:
    """Settle the end of a unit; returns the task ids this sent.

    - a failed unit fails its job (once, here) and lets the job's pipeline record it;
    - a finished shard claims the job's finishing unit: only the last one to finish wins,
      and only the winner dispatches it;
    - a finished job advances its pipeline, and the steps that became ready are dispatched.
      Two children finishing together cannot both create a step: the ledger's unique
      (parent, step) decides, and only the creator dispatches it.
    """
    db = executor.rt.db
    if error is not None:
        ledger.fail_job(db, unit.job_id, describe(error))
    elif unit.shard_id is not None:
        if ledger.claim_finish(db, unit.job_id):
            return executor.dispatch(Unit(unit.kind, unit.job_id))
        return []
    parent_id = ledger.job(db, unit.job_id).parent_id
    if parent_id is None:
        return []
    parent = ledger.job(db, parent_id)
    sent = []
    for child_id in kind(parent.kind).advance(executor.rt, parent):
        sent += executor.submit(child_id)
    return sent


def _run_shard(rt, job_kind, unit: Unit, progress: Progress) -> dict:
    """One shard: claimed in the ledger (a shard already done is a no-op), worked, recorded."""
    db = rt.db
    shard = ledger.begin_shard(db, unit.shard_id, ledger.worker_name())
    if shard is None:
        return {"shard_id": unit.shard_id, "status": "skipped"}
    job = ledger.job(db, unit.job_id)
    try:
        output = job_kind.run_shard(rt, job, shard, progress)
    except BaseException as exc:
        if ledger.shard(db, shard.id).done:
            # a concurrent delivery finished this shard (and may have discarded our partial file)
            return {"shard_id": shard.id, "status": "lost_race"}
        ledger.fail_shard(db, shard.id, describe(exc))
        raise
    recorded = ledger.complete_shard(
        db, shard.id, path=output.path, sha256=output.sha256, size_bytes=output.size_bytes,
        n_examples=output.n_examples, n_success=output.n_success, queries=output.queries, seconds=output.seconds)
    if not recorded:
        # another delivery of this shard recorded its output first; ours is surplus
        if ledger.shard(db, shard.id).path != output.path:
            job_kind.discard(rt, output)
        return {"shard_id": shard.id, "status": "lost_race"}
    return {"shard_id": shard.id, "index": shard.index, "n_shards": job.n_shards, "status": DONE,
            "n": output.n_examples, "seconds": output.seconds}


def _run_finish(rt, job_kind, job_id: int, progress: Progress) -> dict:
    """The job's finishing unit, recorded as the job's result. A redelivered unit whose job is
    finished, failed or cancelled (or, for a sharded job, not claimed) does nothing; so does a
    duplicate while another process holds the kind's lock on this job."""
    db = rt.db
    with job_kind.exclusive(rt, job_id) as held:
        if not held:
            return {"job_id": job_id, "status": "finishing elsewhere"}
        job = ledger.job(db, job_id)  # read under the lock: a finish that held it before us may have won
        ready = (MERGING,) if job_kind.sharded else (PENDING, RUNNING)
        if job.status not in ready:
            return {"job_id": job_id, "status": f"skipped: job is {job.status}"}
        if not job_kind.sharded:
            ledger.start_job(db, job_id)
        started = time.perf_counter()
        finished = job_kind.finish(rt, job, progress)
        recorded = ledger.finish_job(db, job_id, finished.result, store=finished.store,
                                     from_states=(MERGING,) if job_kind.sharded else (RUNNING,))
    if not recorded:
        return {"job_id": job_id, "status": f"skipped: job is {ledger.job(db, job_id).status}"}
    return {"job_id": job_id, "status": DONE, "seconds": time.perf_counter() - started, **finished.result}
