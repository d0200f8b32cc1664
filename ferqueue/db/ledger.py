"""The ledger: every state change of datasets, artifacts, jobs, shards and runs goes through here.

State transitions are conditional UPDATEs, so two workers racing on the same row cannot both
win: a redelivered shard that already finished is a no-op, and only one caller ever claims a
job's finishing step. Registrations insert and, on a unique-constraint conflict, read the
row the other writer made. Everything comes back as a frozen record of ``ferqueue.db.domain``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime, timedelta

from sqlalchemy import case, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from ferqueue.db.domain import (
    Artifact,
    DatasetRecord,
    Evaluation,
    Experiment,
    Job,
    Shard,
    SplitRecord,
    TrainingRun,
)
from ferqueue.db.session import Database
from ferqueue.db.tables import (
    ArtifactRow,
    DatasetRow,
    EvaluationRow,
    ExperimentRow,
    JobRow,
    RunRow,
    ShardRow,
    SplitRow,
    utcnow,
)
from ferqueue.errors import Conflict, LedgerError
from ferqueue.vocabulary import (
    ACTIVE_JOB_STATES,
    CANCELLED,
    DONE,
    FAILED,
    MERGING,
    PENDING,
    REOPENABLE_JOB_STATES,
    RUNNING,
    STARTABLE_SHARD_STATES,
)

_RECORDS = {ExperimentRow: Experiment, DatasetRow: DatasetRecord, SplitRow: SplitRecord, ArtifactRow: Artifact,
            JobRow: Job, ShardRow: Shard, RunRow: TrainingRun, EvaluationRow: Evaluation}
_NAMES = {ExperimentRow: "experiment", DatasetRow: "dataset", SplitRow: "split", ArtifactRow: "model artifact",
          JobRow: "job", ShardRow: "shard", RunRow: "training run", EvaluationRow: "evaluation"}
_ERROR_CHARS = 4000


def record(row):
    """The frozen record of an ORM row (None stays None)."""
    if row is None:
        return None
    cls = _RECORDS[type(row)]
    return cls(**{f.name: getattr(row, f.name) for f in fields(cls)})


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def now() -> datetime:
    return utcnow()


def _until(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=seconds)


def _free(table, take_from: str | None = None):
    """The row's lease may be taken: nobody holds it, it has expired, or its holder is
    ``take_from`` (a process this host knows to be dead)."""
    free = or_(table.lease_owner.is_(None), table.lease_expires_at.is_(None), table.lease_expires_at < utcnow())
    return free if take_from is None else or_(free, table.lease_owner == take_from)


_NO_LEASE = {"lease_owner": None, "lease_expires_at": None}


# ---- lookups ----------------------------------------------------------------------------------

def _get(db: Database, table, row_id: int):
    with db.session() as s:
        row = s.get(table, row_id)
        if row is None:
            raise LedgerError(f"no {_NAMES[table]} with id {row_id}")
        return record(row)


def job(db: Database, job_id: int) -> Job:
    return _get(db, JobRow, job_id)


def shard(db: Database, shard_id: int) -> Shard:
    return _get(db, ShardRow, shard_id)


def artifact(db: Database, artifact_id: int) -> Artifact:
    return _get(db, ArtifactRow, artifact_id)


def dataset(db: Database, dataset_id: int) -> DatasetRecord:
    return _get(db, DatasetRow, dataset_id)


def split(db: Database, split_id: int) -> SplitRecord:
    return _get(db, SplitRow, split_id)


def run(db: Database, run_id: int) -> TrainingRun:
    return _get(db, RunRow, run_id)


def find_dataset(db: Database, fingerprint: str | None, image_size: int | None) -> DatasetRecord | None:
    """The registered dataset with this fingerprint at this image size, if any."""
    with db.session() as s:
        return record(s.scalar(select(DatasetRow).where(DatasetRow.fingerprint == fingerprint,
                                                        DatasetRow.image_size == image_size)))


def find_experiment(db: Database, name_or_id: str | int) -> Experiment:
    with db.session() as s:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = s.get(ExperimentRow, int(name_or_id))
        else:
            row = s.scalar(select(ExperimentRow).where(ExperimentRow.name == name_or_id))
        if row is None:
            raise LedgerError(f"no experiment {name_or_id!r}")
        return record(row)


def run_of_artifact(db: Database, artifact_id: int) -> int | None:
    """The id of the training run that made an artifact (None for an artifact from elsewhere)."""
    with db.session() as s:
        return s.scalar(select(RunRow.id).where(RunRow.artifact_id == artifact_id))


# ---- registrations: insert, or read what a concurrent writer inserted first -------------------

def _insert_or_select(db: Database, make: Callable[[], object], existing) -> object:
    """Insert ``make()`` unless a row matching the ``existing`` query is there; a unique-constraint
    conflict with a concurrent insert is settled by reading the winner's row."""
    with db.session() as s:
        row = s.scalar(existing)
        if row is not None:
            return record(row)
    try:
        with db.session() as s:
            row = make()
            s.add(row)
            s.flush()
            return record(row)
    except IntegrityError:
        with db.session() as s:
            row = s.scalar(existing)
            if row is None:  # the conflict was on another constraint: a real error
                raise
            return record(row)


def get_or_create_experiment(db: Database, name: str, description: str | None = None,
                             config: dict | None = None) -> Experiment:
    return _insert_or_select(db, lambda: ExperimentRow(name=name, description=description, config=config),
                             select(ExperimentRow).where(ExperimentRow.name == name))


def create_experiment(db: Database, name: str, description: str | None = None,
                      config: dict | None = None) -> Experiment | None:
    """A new experiment named ``name``; None when that name is taken (the database decides)."""
    try:
        with db.session() as s:
            row = ExperimentRow(name=name, description=description, config=config)
            s.add(row)
            s.flush()
            return record(row)
    except IntegrityError:
        return None


def register_dataset(db: Database, data) -> DatasetRecord:
    return _insert_or_select(
        db,
        lambda: DatasetRow(name=data.name, source=data.source, fingerprint=data.fingerprint,
                           image_size=data.image_size, num_examples=len(data),
                           class_names=list(data.class_names), info=data.describe()),
        select(DatasetRow).where(DatasetRow.fingerprint == data.fingerprint,
                                 DatasetRow.image_size == data.image_size),
    )


def register_split(db: Database, dataset_id: int, made) -> SplitRecord:
    return _insert_or_select(
        db,
        lambda: SplitRow(dataset_id=dataset_id, kind=made.kind, seed=made.seed, test_fraction=made.test_fraction,
                         fold=made.fold, n_folds=made.n_folds, n_train=len(made.train), n_test=len(made.test),
                         fingerprint=made.fingerprint),
        select(SplitRow).where(SplitRow.fingerprint == made.fingerprint),
    )


def register_artifact(db: Database, **values) -> Artifact:
    return _insert_or_select(db, lambda: ArtifactRow(**values),
                             select(ArtifactRow).where(ArtifactRow.sha256 == values["sha256"]))


# ---- jobs ----------------------------------------------------------------------------------------

def create_job(db: Database, kind: str, spec: dict, *, experiment_id: int | None = None,
               parent_id: int | None = None, step: str | None = None, executor: str = "local",
               shards: list[dict] | None = None) -> Job:
    """Create a job and its planned shards in one transaction. A second job for the same
    (parent, step) raises Conflict: a pipeline's concurrent advances rely on it."""
    try:
        with db.session() as s:
            row = JobRow(kind=kind, spec=spec, experiment_id=experiment_id, parent_id=parent_id, step=step,
                         executor=executor, n_shards=len(shards or []))
            s.add(row)
            s.flush()
            for plan in shards or []:
                s.add(ShardRow(job_id=row.id, **plan))
            return record(row)
    except IntegrityError:
        if parent_id is None or step is None:
            raise
        raise Conflict(f"job {parent_id} already has a step {step}") from None


def children(db: Database, parent_id: int) -> list[Job]:
    with db.session() as s:
        return [record(r) for r in s.scalars(select(JobRow).where(JobRow.parent_id == parent_id).order_by(JobRow.id))]


def start_job(db: Database, job_id: int) -> bool:
    """pending -> running. False when the job is already running, finished or cancelled."""
    with db.session() as s:
        done = s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == PENDING)
                         .values(status=RUNNING, started_at=utcnow()))
        return done.rowcount == 1


def finish_job(db: Database, job_id: int, result: dict | None, *, from_states: tuple[str, ...] = ACTIVE_JOB_STATES,
               store: tuple[str, str, int] | None = None, owner: str | None = None,
               evaluations: list[dict] | None = None) -> bool:
    """-> done with its result, only from ``from_states`` and, with ``owner``, only while that
    owner holds the job's lease. ``store``: the (path, sha256, size) of the store the job's
    merge wrote, counted in merge_count. False when the job was not in one of those states
    (cancelled meanwhile, or finished by another delivery) or its lease was taken over."""
    values = {"status": DONE, "finished_at": utcnow(), "result": result, "error": None, **_NO_LEASE}
    if store is not None:
        path, sha256, size = store
        values.update(store_path=path, store_sha256=sha256, store_size=size, merge_count=JobRow.merge_count + 1)
    held = [] if owner is None else [JobRow.lease_owner == owner]
    with db.session() as s:
        if s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(from_states), *held)
                     .values(**values)).rowcount != 1:
            return False
        if evaluations is not None:  # in the same transaction: an aggregation records exactly once
            ids = _replace_evaluations(s, job_id, evaluations)
            s.execute(update(JobRow).where(JobRow.id == job_id).values(result={**(result or {}), "evaluation_ids": ids}))
        return True


def fail_job(db: Database, job_id: int, error: str) -> bool:
    with db.session() as s:
        return s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(ACTIVE_JOB_STATES))
                         .values(status=FAILED, finished_at=utcnow(), error=error[:_ERROR_CHARS],
                                 **_NO_LEASE)).rowcount == 1


# ---- leases on a job's finishing unit --------------------------------------------------------------

def begin_finish(db: Database, job_id: int, owner: str, lease_seconds: float, *, from_states: tuple[str, ...],
                 max_attempts: int | None = None, take_from: str | None = None) -> Job | None:
    """Take the lease on a job's finishing unit and count the attempt: only from ``from_states``
    (a pending job starts running), only while the lease is free (see ``_free``) and, with
    ``max_attempts``, only while attempts are left. None when another process holds it, the job
    moved on, or no attempt is left."""
    conditions = [JobRow.id == job_id, JobRow.status.in_(from_states), _free(JobRow, take_from)]
    if max_attempts is not None:
        conditions.append(JobRow.attempts < max_attempts)
    with db.session() as s:
        won = s.execute(update(JobRow).where(*conditions).values(
            status=case((JobRow.status == PENDING, RUNNING), else_=JobRow.status),
            started_at=func.coalesce(JobRow.started_at, utcnow()), attempts=JobRow.attempts + 1,
            lease_owner=owner, lease_expires_at=_until(lease_seconds))).rowcount
        return record(s.get(JobRow, job_id)) if won else None


def release_job(db: Database, job_id: int, owner: str, error: str, restart_within: float) -> bool:
    """Give up this attempt's lease on a finishing unit (an error that may pass: it will be
    retried); the unit must start again within ``restart_within`` seconds, else it is re-enqueued."""
    with db.session() as s:
        return s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.lease_owner == owner)
                         .values(lease_owner=None, lease_expires_at=_until(restart_within),
                                 error=error[:_ERROR_CHARS])).rowcount == 1


def cancel_job(db: Database, job_id: int) -> int:
    """Cancel a job, its unfinished shards and its unfinished child jobs; returns rows changed."""
    changed = 0
    with db.session() as s:
        ids = [job_id]
        while ids:  # walk the pipeline tree
            current = ids.pop()
            changed += s.execute(update(JobRow).where(JobRow.id == current, JobRow.status.in_(ACTIVE_JOB_STATES))
                                 .values(status=CANCELLED, finished_at=utcnow(), **_NO_LEASE)).rowcount
            changed += s.execute(update(ShardRow).where(ShardRow.job_id == current,
                                                        ShardRow.status.in_((PENDING, RUNNING, FAILED)))
                                 .values(status=CANCELLED, **_NO_LEASE)).rowcount
            ids.extend(s.scalars(select(JobRow.id).where(JobRow.parent_id == current)))
    return changed


def reopen_job(db: Database, job_id: int) -> None:
    """failed/cancelled -> pending, with unfinished shards back to pending (for resume). A
    person resuming grants them their attempts again: a poison shard gets FERQUEUE_MAX_ATTEMPTS more."""
    with db.session() as s:
        s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(REOPENABLE_JOB_STATES))
                  .values(status=PENDING, error=None, finished_at=None, attempts=0, **_NO_LEASE))
        s.execute(update(ShardRow).where(ShardRow.job_id == job_id, ShardRow.status != DONE)
                  .values(status=PENDING, error=None, attempts=0, **_NO_LEASE))


def tree(db: Database, job_id: int) -> list[Job]:
    """A job and every job below it (a pipeline's steps), parents before their children."""
    order, stack = [], [job_id]
    while stack:
        current = stack.pop()
        order.append(job(db, current))
        stack.extend(child.id for child in children(db, current))
    return order


def reopen_tree(db: Database, job_id: int) -> list[int]:
    """Reopen a failed or cancelled job and every failed or cancelled job below it, children
    first (a pipeline with a failed child would fail again at once). Shards of a job that is
    still active are left alone: a running shard may be running. Returns the reopened ids."""
    reopened = []
    for current in reversed(tree(db, job_id)):
        if current.status in REOPENABLE_JOB_STATES:
            reopen_job(db, current.id)
            reopened.append(current.id)
    return reopened


# ---- shards --------------------------------------------------------------------------------------

def shards(db: Database, job_id: int) -> list[Shard]:
    with db.session() as s:
        return [record(r) for r in s.scalars(select(ShardRow).where(ShardRow.job_id == job_id)
                                             .order_by(ShardRow.index))]


def unfinished_shards(db: Database, job_id: int) -> list[Shard]:
    with db.session() as s:
        return [record(r) for r in s.scalars(select(ShardRow).where(ShardRow.job_id == job_id, ShardRow.status != DONE)
                                             .order_by(ShardRow.index))]


def begin_shard(db: Database, shard_id: int, owner: str, lease_seconds: float = 60, *, worker: str | None = None,
                max_attempts: int | None = None, take_from: str | None = None,
                note: str | None = None) -> Shard | None:
    """Mark a shard running, count the attempt and give ``owner`` its lease for ``lease_seconds``.
    None when it is done or cancelled (a redelivered task), another process holds a live lease
    on it (see ``_free``), or, with ``max_attempts``, no attempt is left; the caller does nothing.
    ``worker``: what status shows (host:pid), the owner by default; ``note``: recorded as the
    shard's last error (why the attempt before this one ended), which stays until it is done."""
    more = {} if note is None else {"error": note[:_ERROR_CHARS]}
    conditions = [ShardRow.id == shard_id, ShardRow.status.in_(STARTABLE_SHARD_STATES), _free(ShardRow, take_from)]
    if max_attempts is not None:
        conditions.append(ShardRow.attempts < max_attempts)
    with db.session() as s:
        claimed = s.execute(
            update(ShardRow).where(*conditions)
            .values(status=RUNNING, attempts=ShardRow.attempts + 1, worker=worker or owner, started_at=utcnow(),
                    lease_owner=owner, lease_expires_at=_until(lease_seconds), **more)
        ).rowcount
        if not claimed:
            return None
        s.execute(update(JobRow).where(JobRow.id == select(ShardRow.job_id).where(ShardRow.id == shard_id)
                                       .scalar_subquery(), JobRow.status == PENDING)
                  .values(status=RUNNING, started_at=utcnow()))
        return record(s.get(ShardRow, shard_id))


def complete_shard(db: Database, shard_id: int, *, owner: str, path: str, sha256: str, size_bytes: int,
                   n_examples: int, n_success: int, queries: int, seconds: float) -> bool:
    """Record a written shard file, only while ``owner`` holds the shard's lease. False when
    another attempt recorded the shard first or took the lease over."""
    with db.session() as s:
        won = s.execute(
            update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status == RUNNING, ShardRow.lease_owner == owner)
            .values(status=DONE, path=path, sha256=sha256, size_bytes=size_bytes, n_examples=n_examples,
                    n_success=n_success, queries=queries, seconds=seconds, finished_at=utcnow(), error=None,
                    **_NO_LEASE)
        ).rowcount
        return won == 1


def fail_shard(db: Database, shard_id: int, error: str, owner: str | None = None) -> None:
    """running -> failed (its job fails with it); with ``owner``, only while that owner holds it."""
    held = [] if owner is None else [ShardRow.lease_owner == owner]
    with db.session() as s:
        s.execute(update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status == RUNNING, *held)
                  .values(status=FAILED, error=error[:_ERROR_CHARS], finished_at=utcnow(), **_NO_LEASE))


def release_shard(db: Database, shard_id: int, owner: str, error: str, restart_within: float) -> bool:
    """running -> pending after an error that may pass (it will be retried), keeping the error
    as the shard's last; it must start again within ``restart_within`` seconds, else the
    supervisor re-enqueues it."""
    with db.session() as s:
        return s.execute(update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status == RUNNING,
                                                ShardRow.lease_owner == owner)
                         .values(status=PENDING, error=error[:_ERROR_CHARS], lease_owner=None,
                                 lease_expires_at=_until(restart_within))).rowcount == 1


def renew_lease(db: Database, unit: str, row_id: int, owner: str, lease_seconds: float) -> bool:
    """Extend ``owner``'s lease on a shard (``unit`` 'shard') or a job's finishing unit ('job').
    False when ``owner`` no longer holds it: it was taken over."""
    table = ShardRow if unit == "shard" else JobRow
    with db.session() as s:
        return s.execute(update(table).where(table.id == row_id, table.lease_owner == owner)
                         .values(lease_expires_at=_until(lease_seconds))).rowcount == 1


# ---- what the supervisor looks for -----------------------------------------------------------------

def expired_shards(db: Database, limit: int = 500) -> list[tuple[Shard, str]]:
    """(shard, its job's kind) of every shard of an active job whose lease (or restart deadline) has
    passed: its worker was lost, or the task that should restart it never came."""
    with db.session() as s:
        rows = s.execute(
            select(ShardRow, JobRow.kind).join(JobRow, JobRow.id == ShardRow.job_id)
            .where(ShardRow.status.in_((PENDING, RUNNING)), ShardRow.lease_expires_at < utcnow(),
                   JobRow.status.in_(ACTIVE_JOB_STATES))
            .order_by(ShardRow.lease_expires_at).limit(limit)).all()
        return [(record(shard), job_kind) for shard, job_kind in rows]


def expired_jobs(db: Database, limit: int = 500) -> list[Job]:
    """Active jobs whose finishing unit's lease (or the deadline of a claimed one) has passed."""
    with db.session() as s:
        return [record(r) for r in s.scalars(
            select(JobRow).where(JobRow.status.in_(ACTIVE_JOB_STATES), JobRow.lease_expires_at < utcnow())
            .order_by(JobRow.lease_expires_at).limit(limit))]


def reclaim_shard(db: Database, shard_id: int, note: str, restart_within: float) -> bool:
    """An expired shard back to pending, its lease cleared and a new deadline set, for one
    re-enqueue: of several supervisors seeing it expired, exactly one wins. Its late holder, if
    alive, can neither renew nor record any more."""
    with db.session() as s:
        return s.execute(update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status.in_((PENDING, RUNNING)),
                                                ShardRow.lease_expires_at < utcnow())
                         .values(status=PENDING, error=note[:_ERROR_CHARS], lease_owner=None,
                                 lease_expires_at=_until(restart_within))).rowcount == 1


def reclaim_job(db: Database, job_id: int, note: str, restart_within: float) -> bool:
    """The same as ``reclaim_shard`` for a job's finishing unit (its state stays)."""
    with db.session() as s:
        return s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(ACTIVE_JOB_STATES),
                                              JobRow.lease_expires_at < utcnow())
                         .values(error=note[:_ERROR_CHARS], lease_owner=None,
                                 lease_expires_at=_until(restart_within))).rowcount == 1


def give_up_shard(db: Database, shard_id: int, max_attempts: int, error: str,
                  take_from: str | None = None) -> bool:
    """A shard that used up its attempts and that nobody holds -> failed. Exactly one caller wins."""
    with db.session() as s:
        return s.execute(update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status.in_((PENDING, RUNNING)),
                                                ShardRow.attempts >= max_attempts, _free(ShardRow, take_from))
                         .values(status=FAILED, error=error[:_ERROR_CHARS], finished_at=utcnow(),
                                 **_NO_LEASE)).rowcount == 1


def give_up_job(db: Database, job_id: int, max_attempts: int, error: str,
                take_from: str | None = None) -> bool:
    """A finishing unit that used up its attempts and that nobody holds: its job -> failed."""
    with db.session() as s:
        return s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status.in_(ACTIVE_JOB_STATES),
                                              JobRow.attempts >= max_attempts, _free(JobRow, take_from))
                         .values(status=FAILED, error=error[:_ERROR_CHARS], finished_at=utcnow(),
                                 **_NO_LEASE)).rowcount == 1


def reset_shard(db: Database, shard_id: int, reason: str) -> bool:
    """done -> pending, its file forgotten, so that it is generated again (its file was lost or
    damaged), with a fresh set of attempts. False when the shard was not done."""
    with db.session() as s:
        return s.execute(update(ShardRow).where(ShardRow.id == shard_id, ShardRow.status == DONE)
                         .values(status=PENDING, path=None, sha256=None, size_bytes=None, n_examples=None,
                                 n_success=None, queries=None, seconds=None, finished_at=None, attempts=0,
                                 error=reason[:_ERROR_CHARS], **_NO_LEASE)).rowcount == 1


def unclaim_finish(db: Database, job_id: int) -> bool:
    """merging -> running: the job's shards must run again before it can finish (or the claimer
    could not send its finishing unit, and the next claim will)."""
    with db.session() as s:
        return s.execute(update(JobRow).where(JobRow.id == job_id, JobRow.status == MERGING)
                         .values(status=RUNNING, **_NO_LEASE)).rowcount == 1


def claim_finish(db: Database, job_id: int, start_within: float = 60) -> bool:
    """running -> merging, only when every shard is done: the right to run the job's finishing
    step (a generation job's merge). Exactly one caller wins. The finishing unit must start
    within ``start_within`` seconds (a deadline with no owner), else the supervisor re-enqueues it:
    a claimer that dies before sending it loses nothing.

    Each shard's completion commits before its claim runs, so the last shard to finish
    always sees every other shard done; the row lock on the job decides between racers.
    """
    with db.session() as s:
        not_done = select(func.count(ShardRow.id)).where(ShardRow.job_id == job_id, ShardRow.status != DONE)
        won = s.execute(
            update(JobRow).where(JobRow.id == job_id, JobRow.status.in_((RUNNING, PENDING)),
                                 not_done.scalar_subquery() == 0)
            .values(status=MERGING, lease_owner=None, lease_expires_at=_until(start_within))
        ).rowcount
        return won == 1


# ---- training runs and evaluations ---------------------------------------------------------------

def run_for_job(db: Database, job_id: int, **values) -> TrainingRun:
    """The training run of a train job, created on first use and reused by a retry."""
    with db.session() as s:
        row = s.scalar(select(RunRow).where(RunRow.job_id == job_id))
        if row is None:
            row = RunRow(job_id=job_id, **values)
            s.add(row)
        else:
            for key, value in values.items():
                setattr(row, key, value)
        row.status = RUNNING
        row.started_at = utcnow()
        row.error = None
        s.flush()
        return record(row)


def update_run(db: Database, run_id: int, **values) -> None:
    with db.session() as s:
        s.execute(update(RunRow).where(RunRow.id == run_id).values(**values))


def _replace_evaluations(s, job_id: int, rows: list[dict]) -> list[int]:
    """Write a job's evaluations in session ``s``, replacing what an earlier attempt wrote."""
    for old in s.scalars(select(EvaluationRow).where(EvaluationRow.job_id == job_id)):
        s.delete(old)
    s.flush()
    made = [EvaluationRow(job_id=job_id, **row) for row in rows]
    s.add_all(made)
    s.flush()
    return [row.id for row in made]
