"""The ledger: every state change of datasets, artifacts, jobs, shards and runs goes through here.

State transitions are conditional UPDATEs, so two workers racing on the same row cannot both
win: a redelivered shard that already finished is a no-op, and only one caller ever claims a
job's merge. Rows come back detached; nothing outside holds a live session.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime

from sqlalchemy import func, select, update

from ferqueue.db.models import (
    DatasetRow,
    Evaluation,
    Experiment,
    Job,
    ModelArtifact,
    Shard,
    SplitRow,
    TrainingRun,
    utcnow,
)
from ferqueue.db.session import Database
from ferqueue.errors import LedgerError

ACTIVE_JOB_STATES = ("pending", "running", "merging")


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---- registrations (get or create) -------------------------------------------------------

def get_or_create_experiment(db: Database, name: str, description: str | None = None,
                             config: dict | None = None) -> Experiment:
    with db.session() as s:
        row = s.scalar(select(Experiment).where(Experiment.name == name))
        if row is None:
            row = Experiment(name=name, description=description, config=config)
            s.add(row)
            s.flush()
        return row


def find_experiment(db: Database, name_or_id: str | int) -> Experiment:
    with db.session() as s:
        if isinstance(name_or_id, int) or str(name_or_id).isdigit():
            row = s.get(Experiment, int(name_or_id))
        else:
            row = s.scalar(select(Experiment).where(Experiment.name == name_or_id))
        if row is None:
            raise LedgerError(f"no experiment {name_or_id!r}")
        return row


def register_dataset(db: Database, dataset) -> DatasetRow:
    with db.session() as s:
        row = s.scalar(select(DatasetRow).where(DatasetRow.fingerprint == dataset.fingerprint,
                                                DatasetRow.image_size == dataset.image_size))
        if row is None:
            row = DatasetRow(name=dataset.name, source=dataset.source, fingerprint=dataset.fingerprint,
                             image_size=dataset.image_size, num_examples=len(dataset),
                             class_names=list(dataset.class_names), info=dataset.describe())
            s.add(row)
            s.flush()
        return row


def register_split(db: Database, dataset_id: int, split) -> SplitRow:
    with db.session() as s:
        row = s.scalar(select(SplitRow).where(SplitRow.fingerprint == split.fingerprint))
        if row is None:
            row = SplitRow(dataset_id=dataset_id, kind=split.kind, seed=split.seed,
                           test_fraction=split.test_fraction, fold=split.fold, n_folds=split.n_folds,
                           n_train=len(split.train), n_test=len(split.test), fingerprint=split.fingerprint)
            s.add(row)
            s.flush()
        return row


def register_artifact(db: Database, **fields) -> ModelArtifact:
    with db.session() as s:
        row = s.scalar(select(ModelArtifact).where(ModelArtifact.sha256 == fields["sha256"]))
        if row is None:
            row = ModelArtifact(**fields)
            s.add(row)
            s.flush()
        return row


def get(db: Database, model, row_id: int):
    with db.session() as s:
        row = s.get(model, row_id)
        if row is None:
            raise LedgerError(f"no {model.__tablename__[:-1].replace('_', ' ')} with id {row_id}")
        return row


# ---- jobs ---------------------------------------------------------------------------------

def create_job(db: Database, kind: str, spec: dict, *, experiment_id: int | None = None,
               parent_id: int | None = None, step: str | None = None, executor: str = "local",
               shards: list[dict] | None = None) -> Job:
    """Create a job and, for generation jobs, its planned shards, in one transaction."""
    with db.session() as s:
        job = Job(kind=kind, spec=spec, experiment_id=experiment_id, parent_id=parent_id, step=step,
                  executor=executor, n_shards=len(shards or []))
        s.add(job)
        s.flush()
        for plan in shards or []:
            s.add(Shard(job_id=job.id, **plan))
        return job


def children(db: Database, parent_id: int) -> list[Job]:
    with db.session() as s:
        return list(s.scalars(select(Job).where(Job.parent_id == parent_id).order_by(Job.id)))


def start_job(db: Database, job_id: int) -> bool:
    """pending -> running. False when the job is already running, finished or cancelled."""
    with db.session() as s:
        done = s.execute(update(Job).where(Job.id == job_id, Job.status == "pending")
                         .values(status="running", started_at=utcnow()))
        return done.rowcount == 1


def finish_job(db: Database, job_id: int, result: dict | None = None, **fields) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATES))
                  .values(status="done", finished_at=utcnow(), result=result, error=None, **fields))


def fail_job(db: Database, job_id: int, error: str) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE_JOB_STATES))
                  .values(status="failed", finished_at=utcnow(), error=error[:4000]))


def cancel_job(db: Database, job_id: int) -> int:
    """Cancel a job, its unfinished shards and its unfinished child jobs; returns rows changed."""
    changed = 0
    with db.session() as s:
        ids = [job_id]
        while ids:  # walk the pipeline tree
            current = ids.pop()
            changed += s.execute(update(Job).where(Job.id == current, Job.status.in_(ACTIVE_JOB_STATES))
                                 .values(status="cancelled", finished_at=utcnow())).rowcount
            changed += s.execute(update(Shard).where(Shard.job_id == current,
                                                     Shard.status.in_(("pending", "running", "failed")))
                                 .values(status="cancelled")).rowcount
            ids.extend(s.scalars(select(Job.id).where(Job.parent_id == current)))
    return changed


def reopen_job(db: Database, job_id: int) -> None:
    """failed/cancelled -> pending, with unfinished shards back to pending (for resume)."""
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status.in_(("failed", "cancelled")))
                  .values(status="pending", error=None, finished_at=None))
        s.execute(update(Shard).where(Shard.job_id == job_id, Shard.status != "done")
                  .values(status="pending", error=None))


def reopen_tree(db: Database, job_id: int) -> list[int]:
    """Reopen a failed or cancelled job and every failed or cancelled job below it, children
    first (a pipeline with a failed child would fail again at once). Shards of a job that is
    still active are left alone: a running shard may be running. Returns the reopened ids."""
    order, stack = [], [job_id]
    while stack:  # walk the pipeline tree
        current = stack.pop()
        order.append(current)
        stack.extend(child.id for child in children(db, current))
    reopened = []
    for current in reversed(order):
        if get(db, Job, current).status in ("failed", "cancelled"):
            reopen_job(db, current)
            reopened.append(current)
    return reopened


# ---- shards -------------------------------------------------------------------------------

def shards(db: Database, job_id: int) -> list[Shard]:
    with db.session() as s:
        return list(s.scalars(select(Shard).where(Shard.job_id == job_id).order_by(Shard.index)))


def begin_shard(db: Database, shard_id: int, worker: str) -> Shard | None:
    """Mark a shard running and count the attempt. None when it is already done or cancelled
    (a redelivered task), so the caller does nothing."""
    with db.session() as s:
        claimed = s.execute(
            update(Shard).where(Shard.id == shard_id, Shard.status.in_(("pending", "running", "failed")))
            .values(status="running", attempts=Shard.attempts + 1, worker=worker, started_at=utcnow(),
                    error=None)
        ).rowcount
        if not claimed:
            return None
        s.execute(update(Job).where(Job.id == select(Shard.job_id).where(Shard.id == shard_id)
                                    .scalar_subquery(), Job.status == "pending")
                  .values(status="running", started_at=utcnow()))
        return s.get(Shard, shard_id)


def complete_shard(db: Database, shard_id: int, info, seconds: float) -> bool:
    """Record a written shard file. False when another attempt recorded the shard first."""
    with db.session() as s:
        won = s.execute(
            update(Shard).where(Shard.id == shard_id, Shard.status.in_(("running", "pending", "failed")))
            .values(status="done", path=str(info.path), sha256=info.sha256, size_bytes=info.size_bytes,
                    n_examples=info.n_examples, n_success=info.n_success, queries=info.queries,
                    seconds=seconds, finished_at=utcnow(), error=None)
        ).rowcount
        return won == 1


def fail_shard(db: Database, shard_id: int, error: str) -> None:
    with db.session() as s:
        s.execute(update(Shard).where(Shard.id == shard_id, Shard.status == "running")
                  .values(status="failed", error=error[:4000], finished_at=utcnow()))


def unfinished_shards(db: Database, job_id: int) -> list[Shard]:
    with db.session() as s:
        return list(s.scalars(select(Shard).where(Shard.job_id == job_id, Shard.status != "done")
                              .order_by(Shard.index)))


def claim_merge(db: Database, job_id: int) -> bool:
    """running -> merging, only when every shard is done. Exactly one caller wins.

    Each shard's completion commits before its claim runs, so the last shard to finish
    always sees every other shard done; the row lock on the job decides between racers.
    """
    with db.session() as s:
        not_done = select(func.count(Shard.id)).where(Shard.job_id == job_id, Shard.status != "done")
        won = s.execute(
            update(Job).where(Job.id == job_id, Job.status.in_(("running", "pending")),
                              not_done.scalar_subquery() == 0)
            .values(status="merging")
        ).rowcount
        return won == 1


def complete_merge(db: Database, job_id: int, path: str, sha256: str, size: int, result: dict) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id, Job.status == "merging")
                  .values(status="done", store_path=path, store_sha256=sha256, store_size=size,
                          merge_count=Job.merge_count + 1, finished_at=utcnow(), result=result))


# ---- training runs and evaluations --------------------------------------------------------

def run_for_job(db: Database, job_id: int, **fields) -> TrainingRun:
    """The training run of a train job, created on first use and reused by a retry."""
    with db.session() as s:
        row = s.scalar(select(TrainingRun).where(TrainingRun.job_id == job_id))
        if row is None:
            row = TrainingRun(job_id=job_id, **fields)
            s.add(row)
        else:
            for key, value in fields.items():
                setattr(row, key, value)
        row.status = "running"
        row.started_at = utcnow()
        row.error = None
        s.flush()
        return row


def update_run(db: Database, run_id: int, **fields) -> None:
    with db.session() as s:
        s.execute(update(TrainingRun).where(TrainingRun.id == run_id).values(**fields))


def replace_evaluations(db: Database, job_id: int, rows: list[dict]) -> list[int]:
    """Write a job's evaluations; a retried job replaces what an earlier attempt wrote."""
    with db.session() as s:
        for old in s.scalars(select(Evaluation).where(Evaluation.job_id == job_id)):
            s.delete(old)
        s.flush()
        objs = [Evaluation(job_id=job_id, **row) for row in rows]
        s.add_all(objs)
        s.flush()
        return [o.id for o in objs]


def latest_job(db: Database) -> Job | None:
    with db.session() as s:
        return s.scalar(select(Job).where(Job.parent_id.is_(None)).order_by(Job.id.desc()).limit(1))


def now() -> datetime:
    return utcnow()
