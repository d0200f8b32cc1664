"""Per-process runtime: settings, the ledger, and caches of datasets and models.

The local executor and every Celery worker child hold one Runtime. Caches are keyed by
fingerprint, so a worker that runs many shards of one job loads its model and dataset once.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from ferqueue.config import Settings, load_settings
from ferqueue.db.models import DatasetRow, ModelArtifact, SplitRow
from ferqueue.db.session import Database, open_database
from ferqueue.errors import DataError

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

    def dataset(self, row: DatasetRow, progress=None):
        """The dataset a ledger row describes, refused if its files changed since registration."""
        from ferqueue.data import load_dataset

        key = (row.fingerprint, row.image_size)
        if key not in self._datasets:
            dataset = load_dataset(row.source, row.image_size, cache_dir=self.settings.cache_dir,
                                   progress=progress)
            if dataset.fingerprint != row.fingerprint:
                raise DataError(
                    f"dataset {row.source} changed since it was registered "
                    f"(fingerprint {dataset.fingerprint[:12]}…, ledger {row.fingerprint[:12]}…)"
                )
            self._datasets[key] = dataset
        return self._datasets[key]

    def register_dataset(self, dataset) -> DatasetRow:
        """Record a dataset loaded in this process and keep it cached, so that jobs run here
        do not load (and fingerprint) it a second time."""
        from ferqueue import ledger

        row = ledger.register_dataset(self.db, dataset)
        self._datasets[(row.fingerprint, row.image_size)] = dataset
        return row

    def register_split(self, dataset_id: int, split) -> SplitRow:
        """Record a split made in this process and keep it cached, as ``register_dataset``."""
        from ferqueue import ledger

        row = ledger.register_split(self.db, dataset_id, split)
        self._splits[row.fingerprint] = split
        return row

    def split(self, dataset, row: SplitRow):
        from ferqueue.data import make_split

        if row.fingerprint not in self._splits:
            split = make_split(dataset, row.kind, test_fraction=row.test_fraction, seed=row.seed,
                               n_folds=row.n_folds, fold=row.fold)
            if split.fingerprint != row.fingerprint:
                raise DataError(f"split {row.id} of {dataset.source} no longer reproduces its recorded indices")
            self._splits[row.fingerprint] = split
        return self._splits[row.fingerprint]

    def model(self, artifact: ModelArtifact):
        """Load (or reuse) a model artifact, verifying its sha256 on first load."""
        from ferqueue.models import load_model

        self.tensorflow()
        if artifact.sha256 in self._models:
            self._models.move_to_end(artifact.sha256)
            return self._models[artifact.sha256]
        model = load_model(artifact.path, artifact.sha256)
        self._models[artifact.sha256] = model
        while len(self._models) > _MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return model
