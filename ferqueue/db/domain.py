"""Plain, frozen records: what the ledger and the queries hand to the rest of ferqueue.

They mirror the SQL tables (``ferqueue.db.tables``) field for field, but hold no session and
cannot be changed: every change goes through a ledger function, as a conditional UPDATE.
This module imports neither SQLAlchemy nor anything else heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ferqueue.vocabulary import ACTIVE_JOB_STATES, DONE, FINAL_JOB_STATES


@dataclass(frozen=True)
class Experiment:
    id: int
    name: str
    description: str | None
    config: dict | None
    created_at: datetime


@dataclass(frozen=True)
class DatasetRecord:
    """A dataset as registered: where it came from and the fingerprint that identifies it."""

    id: int
    name: str
    source: str
    fingerprint: str
    image_size: int
    num_examples: int
    class_names: list
    info: dict | None
    created_at: datetime


@dataclass(frozen=True)
class SplitRecord:
    id: int
    dataset_id: int
    kind: str
    seed: int
    test_fraction: float
    fold: int
    n_folds: int | None
    n_train: int
    n_test: int
    fingerprint: str
    created_at: datetime

    def size(self, subset: str) -> int:
        return self.n_train if subset == "train" else self.n_test


@dataclass(frozen=True)
class Artifact:
    """A trained model file, identified by the sha256 of its bytes."""

    id: int
    architecture: str
    path: str
    sha256: str
    num_params: int
    image_size: int
    class_names: list
    weights: str
    size_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class Job:
    id: int
    experiment_id: int | None
    parent_id: int | None
    step: str | None
    kind: str
    status: str
    executor: str
    spec: dict
    n_shards: int
    store_path: str | None
    store_sha256: str | None
    store_size: int | None
    merge_count: int
    result: dict | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    lease_owner: str | None
    lease_expires_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_JOB_STATES

    @property
    def final(self) -> bool:
        return self.status in FINAL_JOB_STATES

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Shard:
    id: int
    job_id: int
    index: int
    attack_key: str
    attack_spec: str
    start: int
    stop: int
    status: str
    attempts: int
    worker: str | None
    path: str | None
    sha256: str | None
    size_bytes: int | None
    n_examples: int | None
    n_success: int | None
    queries: int | None
    seconds: float | None
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None

    @property
    def done(self) -> bool:
        return self.status == DONE


@dataclass(frozen=True)
class TrainingRun:
    id: int
    experiment_id: int | None
    job_id: int | None
    dataset_id: int
    split_id: int
    architecture: str
    mode: str
    store_job_id: int | None
    params: dict
    status: str
    artifact_id: int | None
    epochs_run: int | None
    wall_seconds: float | None
    generation_seconds: float | None
    gradient_evals: int | None
    generation_gradient_evals: int | None
    examples_seen: int | None
    history: dict | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True)
class Evaluation:
    id: int
    experiment_id: int | None
    job_id: int | None
    artifact_id: int
    training_run_id: int | None
    dataset_id: int
    split_id: int | None
    subset: str
    setting: str
    attack: str
    attack_key: str
    attack_params: dict | None
    epsilon: float | None
    source_artifact_id: int | None
    n: int
    accuracy: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    mean_confidence: float
    success_rate: float | None
    mean_queries: float | None
    mean_linf: float | None
    mean_l0: float | None
    confusion: list
    report: dict
    class_names: list
    unmapped: dict | None
    seconds: float
    created_at: datetime
