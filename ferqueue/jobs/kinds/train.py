"""Training jobs: one model, one mode (standard, offline adversarial on a stored generation job,
online adversarial), one training run with its costs, one new artifact. A job may start from an
earlier artifact's weights (a segment of refresh_adv training)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ferqueue.db import ledger
from ferqueue.errors import ConfigError, LeaseLost, StoreError, describe
from ferqueue.jobs.checks import required
from ferqueue.jobs.registry import Finished, JobKind, Spec, register
from ferqueue.vocabulary import DONE, FAILED, STANDARD, STORE_MODES


@dataclass(frozen=True)
class TrainSpec(Spec):
    dataset_id: int
    split_id: int
    architecture: str
    mode: str = STANDARD
    train: dict = field(default_factory=dict)  # TrainConfig fields
    weights: str = "auto"
    store_job_id: int | None = None  # offline_adv, refresh_adv: the generation job whose store it trains on
    init_artifact_id: int | None = None  # start from this model's weights instead of a new model

    def __post_init__(self):
        from ferqueue.models import MODEL_NAMES, WITH_BACKBONE

        if self.architecture not in MODEL_NAMES:
            raise ConfigError(f"unknown model {self.architecture!r}; choose one of {', '.join(MODEL_NAMES)}")
        config = self.config()
        if config.epochs == 0 and (config.probe_epochs == 0 or self.architecture not in WITH_BACKBONE):
            probe = " (or --probe-epochs, to train the head of a pretrained model)" \
                if self.architecture in WITH_BACKBONE else ""
            raise ConfigError(f"epochs 0 would record an untrained {self.architecture} ({self.mode}): "
                              f"give --epochs of at least 1{probe}")
        object.__setattr__(self, "train", config.to_dict())  # validated, defaults filled in

    def config(self):
        from ferqueue.train import TrainConfig

        return TrainConfig(**{**self.train, "mode": self.mode})


@register
class Train(JobKind):
    name = "train"
    spec_type = TrainSpec
    queue = "train"
    finish_task = "ferqueue.train"
    finish_name = "training"

    def check(self, rt, spec: TrainSpec, partial: bool = False) -> None:
        ds_row, _split = rt.records(spec.dataset_id, spec.split_id)
        if spec.mode in STORE_MODES:
            required(spec.store_job_id, f"{spec.mode} training's store (a finished generation job)", partial)
        if spec.init_artifact_id is not None:
            start = ledger.artifact(rt.db, spec.init_artifact_id)
            if start.architecture != spec.architecture or start.image_size != ds_row.image_size:
                raise ConfigError(f"artifact {start.id} is a {start.architecture} at {start.image_size}px; this "
                                  f"training is a {spec.architecture} at {ds_row.image_size}px")

    def finish(self, rt, job, progress) -> Finished:
        spec = self.spec(job.spec)
        ds_row, dataset, split = rt.data(spec.dataset_id, spec.split_id)
        run = ledger.run_for_job(
            rt.db, job.id, experiment_id=job.experiment_id, dataset_id=ds_row.id, split_id=spec.split_id,
            architecture=spec.architecture, mode=spec.mode, store_job_id=spec.store_job_id,
            params={"train": spec.train, "weights": spec.weights, "init_artifact_id": spec.init_artifact_id},
        )
        try:
            return Finished(self._train(rt, spec, run, ds_row, dataset, split, progress))
        except LeaseLost:
            raise  # the run belongs to the attempt that took the lease over
        except BaseException as exc:
            ledger.update_run(rt.db, run.id, status=FAILED, error=describe(exc), finished_at=ledger.now())
            raise

    def _train(self, rt, spec: TrainSpec, run, ds_row, dataset, split, progress) -> dict:
        from ferqueue.data.stream import DatasetExamples, StoredExamples, Stream
        from ferqueue.models import build_model, load_model, save_model
        from ferqueue.train import train_stream

        rt.tensorflow()
        config = spec.config()
        sources = [DatasetExamples(dataset, split.train)]
        generation = {}
        if spec.mode in STORE_MODES:  # original + stored examples, shuffled together, read as they go
            store, generation = _store_of_training_images(rt, spec.store_job_id, ds_row, split)
            sources += [StoredExamples(store, key) for key in store.attacks]
        train = Stream(sources, config.batch_size, config.seed)
        val = Stream([DatasetExamples(dataset, split.test)], max(config.batch_size, 128))
        if spec.init_artifact_id is not None:  # a fresh copy: the runtime's cached model is not trained on
            start = ledger.artifact(rt.db, spec.init_artifact_id)
            model = load_model(rt.artifact_file(start.path, start.sha256, start.size_bytes), start.sha256)
            num_params, weights = start.num_params, start.weights
        else:
            built = build_model(spec.architecture, len(ds_row.class_names), ds_row.image_size,
                                weights=spec.weights, seed=config.seed)
            model, num_params, weights = built.model, built.num_params, built.weights
        result = train_stream(
            model, train, config, val,
            progress=lambda epoch, epochs, _logs: progress(f"train {spec.architecture} {spec.mode}", epoch, epochs),
        )
        # the lease is checked (progress raises LeaseLost) before anything is recorded
        progress(f"train {spec.architecture} {spec.mode}", result.epochs_run, result.epochs_run)
        path, sha = save_model(model, rt.settings.artifact_root, f"{spec.architecture}-{spec.mode}-run{run.id}")
        artifact = ledger.register_artifact(
            rt.db, architecture=spec.architecture, path=rt.artifact_put(path), sha256=sha,
            num_params=num_params, image_size=ds_row.image_size, class_names=list(ds_row.class_names), weights=weights,
            size_bytes=path.stat().st_size,
        )
        ledger.update_run(
            rt.db, run.id, status=DONE, artifact_id=artifact.id, epochs_run=result.epochs_run,
            wall_seconds=result.wall_seconds, gradient_evals=result.gradient_evals,
            examples_seen=result.examples_seen, history=result.history, finished_at=ledger.now(),
            generation_seconds=(generation.get("shard_seconds", 0.0) + generation.get("merge_seconds", 0.0))
            if generation else None,
            generation_gradient_evals=generation.get("queries") if generation else None,
        )
        kept = {k: result.extra[k] for k in ("kept_epoch", "robust_check") if k in result.extra}
        return {"run_id": run.id, "artifact_id": artifact.id, "sha256": sha,
                "val_accuracy": result.extra.get("kept_val_accuracy", result.history["val_accuracy"][-1]),
                "wall_seconds": result.wall_seconds, **kept}


def _store_of_training_images(rt, store_job_id: int, ds_row, split):
    """The store of a finished generation job of this split's training images, and the job's
    cost (charged to the run that trains on it)."""
    store_job, store = rt.finished_store(store_job_id)
    store.check_provenance(dataset_fingerprint=ds_row.fingerprint, split_fingerprint=split.fingerprint)
    if store.attrs.get("subset") != "train":
        raise StoreError(f"store {store.path} was made from the {store.attrs.get('subset')} subset; "
                         "training on it would leak test images")
    return store, store_job.result or {}
