"""Per-process runtime: settings, the ledger, and caches of datasets, splits and models.

The local executor and every Celery worker child hold one Runtime. Caches are keyed by
fingerprint, so a worker that runs many shards of one job loads its model and dataset once.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from ferqueue.config import Settings, load_settings
from ferqueue.db.domain import Artifact, DatasetRecord, Job, SplitRecord
from ferqueue.db.session import Database, open_database
from ferqueue.errors import ConfigError, DataError, StoreError
from ferqueue.vocabulary import DONE

_MODEL_CACHE_SIZE = 3


def configure_tensorflow(threads: int) -> None:
    """Limit TensorFlow's thread pools (before any op runs); 0 keeps TensorFlow's default."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if threads > 0:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # already initialised in this process; the first setting stands


class Runtime:
    """``migrate``: create or upgrade the schema first (commands that record something);
    otherwise the schema is only checked (read-only commands and workers)."""

    def __init__(self, settings: Settings | None = None, migrate: bool = True):
        self.settings = settings or load_settings()
        self.settings.ensure_dirs()
        self.db: Database = open_database(self.settings.database_url, migrate=migrate)
        self._datasets: dict[tuple[str, int], object] = {}
        self._splits: dict[str, object] = {}
        self._models: OrderedDict[str, object] = OrderedDict()
        self._tf_ready = False

    def tensorflow(self) -> None:
        if not self._tf_ready:
            configure_tensorflow(self.settings.tf_threads)
            self._tf_ready = True

    def warm_up(self) -> None:
        """Pay TensorFlow's import and start-up now (a worker's pool child, just forked), not in
        the first task of the first job."""
        self.tensorflow()
        import keras  # noqa: F401
        import tensorflow as tf

        float(tf.reduce_sum(tf.ones((2, 2))))

    # -- data ------------------------------------------------------------------------------------

    def dataset(self, row: DatasetRecord, progress=None):
        """The dataset a ledger record describes, refused if its files changed since registration."""
        from ferqueue.data import load_dataset

        key = (row.fingerprint, row.image_size)
        if key not in self._datasets:
            dataset = load_dataset(row.source, row.image_size, cache_dir=self.settings.cache_dir, progress=progress)
            if dataset.fingerprint != row.fingerprint:
                raise DataError(
                    f"dataset {row.source} changed since it was registered "
                    f"(fingerprint {dataset.fingerprint[:12]}…, ledger {row.fingerprint[:12]}…)"
                )
            self._datasets[key] = dataset
        return self._datasets[key]

    def split(self, dataset, row: SplitRecord):
        """The split a ledger record describes, made again and checked against its fingerprint."""
        from ferqueue.data import make_split

        if row.fingerprint not in self._splits:
            made = make_split(dataset, row.kind, test_fraction=row.test_fraction, seed=row.seed,
                              n_folds=row.n_folds, fold=row.fold)
            if made.fingerprint != row.fingerprint:
                raise DataError(f"split {row.id} of {dataset.source} no longer reproduces its recorded indices")
            self._splits[row.fingerprint] = made
        return self._splits[row.fingerprint]

    def records(self, dataset_id: int, split_id: int) -> tuple[DatasetRecord, SplitRecord]:
        """The ledger records of a dataset and one of its splits."""
        from ferqueue.db import ledger

        ds_row = ledger.dataset(self.db, dataset_id)
        split_row = ledger.split(self.db, split_id)
        if split_row.dataset_id != ds_row.id:
            raise ConfigError(f"split {split_row.id} belongs to dataset {split_row.dataset_id}, not {ds_row.id}")
        return ds_row, split_row

    def data(self, dataset_id: int, split_id: int):
        """(dataset record, dataset, split) of a job's spec."""
        ds_row, split_row = self.records(dataset_id, split_id)
        dataset = self.dataset(ds_row)
        return ds_row, dataset, self.split(dataset, split_row)

    def register_dataset(self, dataset) -> DatasetRecord:
        """Record a dataset loaded in this process and keep it cached, so that jobs run here
        do not load (and fingerprint) it a second time."""
        from ferqueue.db import ledger

        row = ledger.register_dataset(self.db, dataset)
        self._datasets[(row.fingerprint, row.image_size)] = dataset
        return row

    def register_split(self, dataset_id: int, split) -> SplitRecord:
        """Record a split made in this process and keep it cached, as ``register_dataset``."""
        from ferqueue.db import ledger

        row = ledger.register_split(self.db, dataset_id, split)
        self._splits[row.fingerprint] = split
        return row

    # -- models and stores -------------------------------------------------------------------------

    def model(self, artifact: Artifact):
        """Load (or reuse) a model artifact, verifying its sha256 on first load."""
        from ferqueue.models import load_model

        self.tensorflow()
        if artifact.sha256 in self._models:
            self._models.move_to_end(artifact.sha256)
            return self._models[artifact.sha256]
        model = load_model(self.artifact_file(artifact.path), artifact.sha256)
        self._models[artifact.sha256] = model
        while len(self._models) > _MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return model

    # The ledger records paths relative to the store and artifact roots, so that a home can be
    # moved or restored from a backup; an absolute path (as older ledgers hold) stays as it is.

    def store_file(self, path: str) -> Path:
        return self.settings.store_root / path

    def artifact_file(self, path: str) -> Path:
        return self.settings.artifact_root / path

    def relative_to_store(self, path: Path) -> str:
        return str(Path(path).relative_to(self.settings.store_root))

    def relative_to_artifacts(self, path: Path) -> str:
        return str(Path(path).relative_to(self.settings.artifact_root))

    def store_dir(self, job_id: int) -> Path:
        """Where a job's shards and merged store live, under the store root."""
        from ferqueue.store.layout import job_dir

        return job_dir(self.settings.store_root, job_id)

    def originals(self, dataset_id: int):
        """source indices -> the dataset's float32 images (what a store's images are decoded against)."""
        from ferqueue.db import ledger

        dataset = self.dataset(ledger.dataset(self.db, dataset_id))
        return lambda index: dataset.take(index)[0]

    def open_store(self, job: Job):
        """A generation job's merged store, its file checked against the ledger's sha256, its
        images decoded against the job's dataset."""
        from ferqueue.store import AdversarialStore

        return AdversarialStore(self.store_file(job.store_path), job.store_sha256,
                                originals=self.originals(job.spec["dataset_id"]))

    def finished_store(self, job_id: int) -> tuple[Job, object]:
        """A finished generation job and its merged store."""
        from ferqueue.db import ledger

        job = ledger.job(self.db, job_id)
        if job.kind != "generate" or job.status != DONE:
            raise StoreError(f"job {job_id} is not a finished generation job ({job.kind}, {job.status})")
        return job, self.open_store(job)
