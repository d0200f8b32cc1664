"""Per-process runtime: settings, the ledger, where files live, and caches of datasets, splits
and models.

The local executor and every Celery worker child hold one Runtime. Caches are keyed by
fingerprint, so a worker that runs many shards of one job loads its model and dataset once.
Files go through ``ferqueue.objects``: local folders, or an object store behind them
(FERQUEUE_STORE_URL), so that workers on hosts that share no disk reach the same files.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

from ferqueue.config import Settings, load_settings
from ferqueue.db.domain import Artifact, DatasetRecord, Job, SplitRecord
from ferqueue.db.session import Database, open_database
from ferqueue.errors import ConfigError, DataError, StoreError
from ferqueue.objects import Objects
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
        self.objects = Objects(self.settings)
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
        from ferqueue.data.loaders import load_dataset, source_exists

        key = (row.fingerprint, row.image_size)
        if key not in self._datasets:
            if self.objects.datasets.remote and not source_exists(row.source):
                dataset = self._dataset_from_objects(row)  # registered on another host
            else:
                dataset = load_dataset(row.source, row.image_size, cache_dir=self.settings.cache_dir,
                                       progress=progress)
            if dataset.fingerprint != row.fingerprint:
                raise DataError(
                    f"dataset {row.source} changed since it was registered "
                    f"(fingerprint {dataset.fingerprint[:12]}…, ledger {row.fingerprint[:12]}…)"
                )
            self._datasets[key] = dataset
        return self._datasets[key]

    def _dataset_from_objects(self, row: DatasetRecord):
        """A dataset whose source is not on this host, from the cache entry its registration
        uploaded (the .npy checked against its sha256, the manifest against the fingerprint)."""
        import json

        from ferqueue.data.loaders import cache_path, from_cache_entry

        area = self.objects.datasets
        npy = area.relative(cache_path(area.root, row.name, row.fingerprint, row.image_size))
        try:
            facts = json.loads(area.get(npy + ".json").read_text())
        except StoreError:
            raise DataError(f"dataset {row.source} is not on this host and no cache of it was uploaded to "
                            f"{area.url}: register it again from a host that has it") from None
        if facts["fingerprint"] != row.fingerprint:
            area.clear_local(npy + ".json")
            raise DataError(f"the uploaded cache of dataset {row.source} has fingerprint {facts['fingerprint'][:12]}…, "
                            f"the ledger {row.fingerprint[:12]}…")
        return from_cache_entry(area.get(npy, facts["sha256"]), facts)

    def publish_dataset(self, dataset) -> None:
        """Upload a dataset's cache entry, so that hosts without its source can load it (an object
        store only; synthetic faces render anywhere and are not uploaded)."""
        import json

        from ferqueue.data.loaders import cache_entry
        from ferqueue.files import write_atomically

        area = self.objects.datasets
        if not area.remote or dataset.source.startswith("synthetic"):
            return
        npy, facts = cache_entry(dataset, self.settings.cache_dir)
        meta = npy.with_name(npy.name + ".json")
        if area.exists(area.relative(meta)):
            return
        area.put(npy)
        write_atomically(meta.parent, lambda tmp: tmp.write_text(json.dumps(facts)), lambda _sha: meta.name,
                         prefix=f".{meta.name}.")
        area.put(meta)  # last: a host that finds the manifest finds the images

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
        self.publish_dataset(dataset)
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
        model = load_model(self.artifact_file(artifact.path, artifact.sha256, artifact.size_bytes), artifact.sha256)
        self._models[artifact.sha256] = model
        while len(self._models) > _MODEL_CACHE_SIZE:
            self._models.popitem(last=False)
        return model

    # The ledger records paths relative to the store and artifact roots, so that a home can be
    # moved or restored from a backup, and so that hosts with homes of their own find the files
    # in the object store; an absolute path (as older ledgers hold) stays as it is.

    def store_file(self, path: str, sha256: str | None = None, size_bytes: int | None = None) -> Path:
        """The local path of a store file the ledger records (fetched, and checked against
        ``sha256``, from the object store when there is one)."""
        return self.objects.store.get(path, sha256, size_bytes)

    def artifact_file(self, path: str, sha256: str | None = None, size_bytes: int | None = None) -> Path:
        return self.objects.models.get(path, sha256, size_bytes)

    def store_put(self, path: Path) -> str:
        """A file just written under the store root, uploaded when the store is an object
        store: its ledger path. Recorded only after this returns."""
        return self.objects.store.put(path)

    def artifact_put(self, path: Path) -> str:
        return self.objects.models.put(path)

    def store_delete(self, path: str) -> None:
        self.objects.store.delete(path)

    def relative_to_store(self, path: Path) -> str:
        return self.objects.store.relative(path)

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

        return AdversarialStore(self.store_file(job.store_path, job.store_sha256, job.store_size), job.store_sha256,
                                originals=self.originals(job.spec["dataset_id"]), resolve=self.resolve_shard)

    def resolve_shard(self, path: Path, sha256: str, size_bytes: int | None) -> Path:
        """A shard a merged store's manifest names, through the same API as every store file."""
        return self.store_file(self.relative_to_store(path), sha256, size_bytes)

    def finished_store(self, job_id: int) -> tuple[Job, object]:
        """A finished generation job and its merged store."""
        from ferqueue.db import ledger

        job = ledger.job(self.db, job_id)
        if job.kind != "generate" or job.status != DONE:
            raise StoreError(f"job {job_id} is not a finished generation job ({job.kind}, {job.status})")
        return job, self.open_store(job)
