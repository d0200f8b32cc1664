"""SQL tables: the ledger and the results. The schema itself is made by the migrations in
``ferqueue/db/migrations``; a test checks that they agree.

Only ``ferqueue.db`` touches these classes: the ledger and the queries hand out the frozen
records of ``ferqueue.db.domain`` instead.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, configure_mappers, mapped_column

from ferqueue.vocabulary import EVAL_SETTINGS, JOB_STATES, PENDING, RUN_STATES, SHARD_STATES, TRAINING_MODES

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ExperimentRow(Base):
    __tablename__ = "experiments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class DatasetRow(Base):
    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("fingerprint", "image_size", name="uq_datasets_fingerprint_size"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64))
    image_size: Mapped[int] = mapped_column(Integer)
    num_examples: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list] = mapped_column(JSON)
    info: Mapped[dict | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class SplitRow(Base):
    __tablename__ = "splits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    kind: Mapped[str] = mapped_column(String(32))
    seed: Mapped[int] = mapped_column(Integer)
    test_fraction: Mapped[float] = mapped_column(Float)
    fold: Mapped[int] = mapped_column(Integer, default=0)
    n_folds: Mapped[int | None] = mapped_column(Integer)
    n_train: Mapped[int] = mapped_column(Integer)
    n_test: Mapped[int] = mapped_column(Integer)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ArtifactRow(Base):
    __tablename__ = "model_artifacts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    architecture: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    num_params: Mapped[int] = mapped_column(BigInteger)
    image_size: Mapped[int] = mapped_column(Integer)
    class_names: Mapped[list] = mapped_column(JSON)
    weights: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATES), name="status"),
        # a pipeline creates each of its steps once, even when two children finish together
        UniqueConstraint("parent_id", "step", name="uq_jobs_parent_step"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"), index=True)
    step: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    executor: Mapped[str] = mapped_column(String(16), default="local")
    spec: Mapped[dict] = mapped_column(JSON)
    n_shards: Mapped[int] = mapped_column(Integer, default=0)
    store_path: Mapped[str | None] = mapped_column(Text)
    store_sha256: Mapped[str | None] = mapped_column(String(64))
    store_size: Mapped[int | None] = mapped_column(BigInteger)
    merge_count: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # the finishing unit (merge, aggregation, training): its starts, and the lease of the one
    # running it (or, with no owner, the time by which a claimed unit must have started)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)


class ShardRow(Base):
    __tablename__ = "shards"
    __table_args__ = (
        UniqueConstraint("job_id", "index", name="uq_shards_job_index"),
        CheckConstraint(_in("status", SHARD_STATES), name="status"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    attack_key: Mapped[str] = mapped_column(String(200))
    attack_spec: Mapped[str] = mapped_column(String(400))
    start: Mapped[int] = mapped_column(Integer)
    stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    path: Mapped[str | None] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    n_examples: Mapped[int | None] = mapped_column(Integer)
    n_success: Mapped[int | None] = mapped_column(Integer)
    queries: Mapped[int | None] = mapped_column(BigInteger)
    seconds: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    # who runs it now, renewed while it runs (or, with no owner, when a re-enqueued shard must have started)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, index=True)


class RunRow(Base):
    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint(_in("status", RUN_STATES), name="status"),
        CheckConstraint(_in("mode", TRAINING_MODES), name="mode"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    split_id: Mapped[int] = mapped_column(ForeignKey("splits.id"))
    architecture: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(32))
    store_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    params: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    artifact_id: Mapped[int | None] = mapped_column(ForeignKey("model_artifacts.id"))
    epochs_run: Mapped[int | None] = mapped_column(Integer)
    wall_seconds: Mapped[float | None] = mapped_column(Float)
    generation_seconds: Mapped[float | None] = mapped_column(Float)
    gradient_evals: Mapped[int | None] = mapped_column(BigInteger)
    generation_gradient_evals: Mapped[int | None] = mapped_column(BigInteger)
    examples_seen: Mapped[int | None] = mapped_column(BigInteger)
    history: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class EvaluationRow(Base):
    __tablename__ = "evaluations"
    __table_args__ = (CheckConstraint(_in("setting", EVAL_SETTINGS), name="setting"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    experiment_id: Mapped[int | None] = mapped_column(ForeignKey("experiments.id"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id"))
    artifact_id: Mapped[int] = mapped_column(ForeignKey("model_artifacts.id"), index=True)
    training_run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id"))
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id"))
    split_id: Mapped[int | None] = mapped_column(ForeignKey("splits.id"))
    subset: Mapped[str] = mapped_column(String(32), default="test")
    setting: Mapped[str] = mapped_column(String(16))
    attack: Mapped[str] = mapped_column(String(32), default="none")
    attack_key: Mapped[str] = mapped_column(String(200), default="none")
    attack_params: Mapped[dict | None] = mapped_column(JSON)
    epsilon: Mapped[float | None] = mapped_column(Float)
    source_artifact_id: Mapped[int | None] = mapped_column(ForeignKey("model_artifacts.id"))
    n: Mapped[int] = mapped_column(Integer)
    accuracy: Mapped[float] = mapped_column(Float)
    precision_weighted: Mapped[float] = mapped_column(Float)
    recall_weighted: Mapped[float] = mapped_column(Float)
    f1_weighted: Mapped[float] = mapped_column(Float)
    precision_macro: Mapped[float] = mapped_column(Float)
    recall_macro: Mapped[float] = mapped_column(Float)
    f1_macro: Mapped[float] = mapped_column(Float)
    mean_confidence: Mapped[float] = mapped_column(Float)
    success_rate: Mapped[float | None] = mapped_column(Float)
    mean_queries: Mapped[float | None] = mapped_column(Float)
    mean_linf: Mapped[float | None] = mapped_column(Float)
    mean_l0: Mapped[float | None] = mapped_column(Float)
    confusion: Mapped[list] = mapped_column(JSON)
    report: Mapped[dict] = mapped_column(JSON)
    class_names: Mapped[list] = mapped_column(JSON)
    unmapped: Mapped[dict | None] = mapped_column(JSON)
    seconds: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# configured now, on import, not on a first query: SQLAlchemy configures mappers under a global
# lock, which a process forked at that moment (a worker's new pool child) would inherit held
configure_mappers()
