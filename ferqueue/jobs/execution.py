"""Running a job's units, the same way on every executor, and settling what each unit's end means.

``run_unit`` is the one library call behind every unit of work: the local executor calls it
in this process, a Celery task calls it in a worker. A unit runs under a lease in the ledger
(``ferqueue.jobs.leases``), renewed while it works and required to record it. ``complete`` is
the one place where a unit's end is settled: the last shard claims the job's finishing unit, a
finished or failed job advances its pipeline, and a failure is recorded. An error that may
pass (``errors.transient``) releases the unit and raises TransientError, which the executor
retries with backoff; any other error, or the last allowed attempt, fails the job with its
message. The two executors differ only in ``dispatch``: the local one runs the unit now, the
Celery one sends it as a task.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ferqueue.db import ledger
from ferqueue.errors import GaveUp, LeaseLost, TransientError, describe, transient
from ferqueue.jobs.leases import Heartbeat, attempt_owner, dead_holder
from ferqueue.jobs.registry import Progress, kind, no_progress
from ferqueue.vocabulary import CANCELLED, DONE, MERGING, PENDING, RUNNING

# retries of a unit after an error that may pass: 2, 4, 8... seconds, at most RETRY_BACKOFF_MAX,
# with jitter (Celery's autoretry on the workers, the same numbers on the local executor)
RETRY_BACKOFF = 2
RETRY_BACKOFF_MAX = 30
# how often a unit that has not started (its connection to the database or broker failed
# before it could take a lease) is retried; a started unit is bounded by FERQUEUE_MAX_ATTEMPTS
TRANSIENT_RETRIES = 20


@contextmanager
def retried_if_transient() -> Iterator[None]:
    """An error that may pass, raised in the block, as TransientError (which the executors retry)."""
    try:
        yield
    except Exception as exc:
        if transient(exc) and not isinstance(exc, TransientError):
            raise TransientError(describe(exc)) from exc
        raise


def retry_delay(retries: int) -> float:
    """Seconds before retry number ``retries`` (0 first): exponential backoff with full jitter."""
    return random.uniform(0, min(RETRY_BACKOFF_MAX, RETRY_BACKOFF * 2 ** retries))

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
            if ledger.claim_finish(db, job_id, self.rt.settings.lease_seconds):
                return self.dispatch(finishing, in_flight)
            return []
        return [task for s in shards for task in self.dispatch(Unit(job.kind, job_id, s.id), in_flight)]


class LocalExecutor(Executor):
    """Runs every unit in this process, at once, one after another; an error that may pass is
    retried here with the workers' backoff."""

    name = "local"

    def dispatch(self, unit: Unit, in_flight: InFlight = frozenset()) -> list[str]:
        for retries in range(TRANSIENT_RETRIES + 1):
            try:
                outcome = run_unit(self, unit)
                break
            except TransientError:
                if retries == TRANSIENT_RETRIES:
                    raise
                time.sleep(retry_delay(retries))
        if unit.shard_id is not None and "index" in outcome:
            self.progress(f"job {unit.job_id} shards", outcome["index"] + 1, outcome["n_shards"])
        return []

    def run(self, job_id: int) -> None:
        """Run a job (a whole pipeline) to its end in this process."""
        self.submit(job_id)


@dataclass
class Attempt:
    """One attempt at a unit: the lease owner it runs as and, once it took the lease, what it holds."""

    unit: Unit
    owner: str
    attempts: int = 0  # the unit's attempts, this one included, once held
    held: bool = False
    what: str = ""

    def hold(self, attempts: int, what: str) -> None:
        self.held, self.attempts, self.what = True, attempts, what

    def release(self, db, error: str, restart_within: float) -> None:
        """Let go of the lease after an error that may pass; best effort (the database may be what
        failed: then the lease runs out and the supervisor re-enqueues the unit)."""
        if not self.held:
            return
        try:
            if self.unit.shard_id is not None:
                ledger.release_shard(db, self.unit.shard_id, self.owner, error, restart_within)
            else:
                ledger.release_job(db, self.unit.job_id, self.owner, error, restart_within)
        except Exception:  # noqa: BLE001 - see above
            pass

    def fail(self, db, error: str) -> None:
        if self.held and self.unit.shard_id is not None:
            ledger.fail_shard(db, self.unit.shard_id, error, self.owner)


def gave_up(what: str, attempts: int, last: str | None) -> GaveUp:
    """The error a job fails with when one of its units used up its attempts."""
    return GaveUp(f"{what} failed {attempts} attempts (FERQUEUE_MAX_ATTEMPTS); the last: {last or 'no error recorded'}")


def lost_note(shard) -> str:
    """Why a shard's attempt ended without an error of its own: its process is gone."""
    return f"attempt {shard.attempts} on {shard.worker} was lost: its process ended"


def shard_label(shard) -> str:
    return f"shard {shard.index} ({shard.attack_key}, {shard.start}:{shard.stop})"


def run_unit(executor: Executor, unit: Unit) -> dict:
    """Run one unit and settle its end; returns a small JSON outcome (a Celery task's result)."""
    rt = executor.rt
    job_kind = kind(unit.kind)
    with attempt_owner() as owner:
        attempt = Attempt(unit, owner)
        try:
            if unit.shard_id is not None:
                outcome = _run_shard(rt, job_kind, unit, executor.progress, attempt)
            else:
                outcome = _run_finish(rt, job_kind, unit.job_id, executor.progress, attempt)
        except BaseException as exc:
            _settle_error(executor, unit, attempt, exc)
            raise
    # settled even when the unit found its work done: a redelivery after a worker died between
    # recording and settling must still claim the finishing unit or advance the pipeline
    with retried_if_transient():  # the unit is recorded; a retry only settles it
        sent = complete(executor, unit)
    if sent and unit.shard_id is not None:
        outcome["finish_task"] = sent[0]
    return outcome


def _settle_error(executor: Executor, unit: Unit, attempt: Attempt, exc: BaseException) -> None:
    """What a unit's error means: retried (an error that may pass, attempts left), or its job
    fails with the message (any other error, or the last attempt). Raises what the executor sees."""
    db, settings = executor.rt.db, executor.rt.settings
    if transient(exc):
        if not attempt.held or attempt.attempts < settings.max_attempts:
            attempt.release(db, describe(exc), settings.lease_seconds + RETRY_BACKOFF_MAX)
            raise TransientError(describe(exc)) from exc
        exc = gave_up(attempt.what, attempt.attempts, describe(exc))
        attempt.fail(db, str(exc))
        complete(executor, unit, exc)
        raise exc from None
    attempt.fail(db, describe(exc))
    complete(executor, unit, exc)


def complete(executor: Executor, unit: Unit, error: BaseException | None = None) -> list[str]:
    """Settle the end of a unit; returns the task ids this sent.

    - a failed unit fails its job (once, here) and lets the job's pipeline record it;
    - a finished shard claims the job's finishing unit: only the last one to finish wins,
      and only the winner dispatches it (a claim whose unit could not be sent is undone, so
      that the retry claims again);
    - a finished job advances its pipeline, and the steps that became ready are dispatched.
      Two children finishing together cannot both create a step: the ledger's unique
      (parent, step) decides, and only the creator dispatches it.
    """
    db = executor.rt.db
    if error is not None:
        ledger.fail_job(db, unit.job_id, describe(error))
    elif unit.shard_id is not None:
        if ledger.claim_finish(db, unit.job_id, executor.rt.settings.lease_seconds):
            try:
                return executor.dispatch(Unit(unit.kind, unit.job_id))
            except Exception:
                try:
                    ledger.unclaim_finish(db, unit.job_id)
                except Exception:  # noqa: BLE001 - then the claim's deadline passes and the supervisor sends it
                    pass
                raise
        return []
    parent_id = ledger.job(db, unit.job_id).parent_id
    if parent_id is None:
        return []
    parent = ledger.job(db, parent_id)
    sent = []
    for child_id in kind(parent.kind).advance(executor.rt, parent):
        sent += executor.submit(child_id)
    return sent


def _run_shard(rt, job_kind, unit: Unit, progress: Progress, attempt: Attempt) -> dict:
    """One shard: its lease taken in the ledger (a shard already done, or held by a live worker,
    is a no-op), worked while the lease is renewed, recorded only while still held."""
    db, settings = rt.db, rt.settings
    before = ledger.shard(db, unit.shard_id)
    take_from = dead_holder(before)
    shard = ledger.begin_shard(db, unit.shard_id, attempt.owner, settings.lease_seconds, worker=ledger.worker_name(),
                               max_attempts=settings.max_attempts, take_from=take_from,
                               note=lost_note(before) if take_from else None)
    if shard is None:
        return _not_begun_shard(db, settings, unit.shard_id)
    attempt.hold(shard.attempts, f"job {unit.job_id} {shard_label(shard)}")
    job = ledger.job(db, unit.job_id)
    with Heartbeat(db, "shard", shard.id, attempt.owner, settings.lease_seconds) as heartbeat:
        try:
            output = job_kind.run_shard(rt, job, shard, heartbeat.guard(progress))
        except LeaseLost:
            return {"shard_id": shard.id, "status": "lease lost"}
        except BaseException:
            if ledger.shard(db, shard.id).done:
                # a concurrent delivery finished this shard (and may have discarded our partial file)
                return {"shard_id": shard.id, "status": "lost_race"}
            raise
        recorded = ledger.complete_shard(
            db, shard.id, owner=attempt.owner, path=output.path, sha256=output.sha256, size_bytes=output.size_bytes,
            n_examples=output.n_examples, n_success=output.n_success, queries=output.queries, seconds=output.seconds)
    if not recorded:
        # another attempt recorded this shard first, or took its lease over: ours is surplus
        if ledger.shard(db, shard.id).path != output.path:
            job_kind.discard(rt, output)
        return {"shard_id": shard.id, "status": "lost_race"}
    return {"shard_id": shard.id, "index": shard.index, "n_shards": job.n_shards, "status": DONE,
            "n": output.n_examples, "seconds": output.seconds}


def _not_begun_shard(db, settings, shard_id: int) -> dict:
    """A shard this attempt could not start: done or cancelled (nothing to do), held by a live
    worker (it will record it), or out of attempts (a poison shard: it fails, and its job)."""
    shard = ledger.shard(db, shard_id)
    take_from = dead_holder(shard)
    last = lost_note(shard) if take_from else shard.error
    if shard.attempts >= settings.max_attempts and ledger.give_up_shard(
            db, shard.id, settings.max_attempts, last or "no error recorded", take_from=take_from):
        raise gave_up(f"job {shard.job_id} {shard_label(shard)}", shard.attempts, last)
    status = "skipped" if shard.status in (DONE, CANCELLED) else "held elsewhere"
    return {"shard_id": shard_id, "status": status}


def _run_finish(rt, job_kind, job_id: int, progress: Progress, attempt: Attempt) -> dict:
    """The job's finishing unit under the job's lease, recorded as the job's result only while
    the lease is held. A redelivered unit whose job is finished, failed or cancelled (or, for a
    sharded job, not claimed) does nothing; so does a duplicate while a live worker holds it."""
    db, settings = rt.db, rt.settings
    ready = (MERGING,) if job_kind.sharded else (PENDING, RUNNING)
    job = ledger.job(db, job_id)
    if job.status not in ready:
        return {"job_id": job_id, "status": f"skipped: job is {job.status}"}
    begun = ledger.begin_finish(db, job_id, attempt.owner, settings.lease_seconds, from_states=ready,
                                max_attempts=settings.max_attempts, take_from=dead_holder(job))
    what = f"the {job_kind.finish_name} of job {job_id}"
    if begun is None:
        job = ledger.job(db, job_id)
        if job.status in ready and job.attempts >= settings.max_attempts:
            error = gave_up(what, job.attempts, job.error)
            if ledger.give_up_job(db, job_id, settings.max_attempts, describe(error), take_from=dead_holder(job)):
                raise error
        if job.status not in ready:
            return {"job_id": job_id, "status": f"skipped: job is {job.status}"}
        return {"job_id": job_id, "status": "finishing elsewhere"}
    attempt.hold(begun.attempts, what)
    started = time.perf_counter()
    with Heartbeat(db, "job", job_id, attempt.owner, settings.lease_seconds) as heartbeat:
        try:
            finished = job_kind.finish(rt, begun, heartbeat.guard(progress))
        except LeaseLost:
            return {"job_id": job_id, "status": "lease lost"}
        recorded = ledger.finish_job(db, job_id, finished.result, store=finished.store, owner=attempt.owner,
                                     evaluations=finished.evaluations,
                                     from_states=(MERGING,) if job_kind.sharded else (RUNNING,))
    if not recorded:
        job_kind.discard_finish(rt, job_id, finished)
        return {"job_id": job_id, "status": f"skipped: job is {ledger.job(db, job_id).status}"}
    result = ledger.job(db, job_id).result or {}
    return {"job_id": job_id, "status": DONE, "seconds": time.perf_counter() - started, **result}
