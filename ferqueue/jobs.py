"""Job planning and execution, the same for every executor.

Work functions take ids, load what they need through the Runtime, call one library
function and record the outcome in the ledger. The local executor calls them in-process;
Celery tasks (workers/) call exactly the same functions.
"""

from __future__ import annotations

import fcntl
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ferqueue import ledger
from ferqueue.db.models import DatasetRow, Job, ModelArtifact, Shard, SplitRow, TrainingRun
from ferqueue.errors import ConfigError, FerqueueError, LedgerError, StoreError
from ferqueue.runtime import Runtime

Progress = Callable[[str, int, int], None]  # (label, done, total)
SUBSETS = ("train", "test")


def _noop(_label: str, _done: int, _total: int) -> None:
    pass


def _subset_indices(split, subset: str) -> np.ndarray:
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose train or test")
    return split.train if subset == "train" else split.test


def store_dir(rt: Runtime, job_id: int) -> Path:
    """Where a generation job's shards and merged store live, always under the store root."""
    path = (rt.settings.store_root / f"job-{job_id:06d}").resolve()
    if rt.settings.store_root.resolve() not in path.parents:
        raise StoreError(f"store path {path} escapes the store root {rt.settings.store_root}")
    return path


def _load_rows(rt: Runtime, dataset_id: int, split_id: int):
    ds_row = ledger.get(rt.db, DatasetRow, dataset_id)
    split_row = ledger.get(rt.db, SplitRow, split_id)
    if split_row.dataset_id != ds_row.id:
        raise LedgerError(f"split {split_id} belongs to dataset {split_row.dataset_id}, not {dataset_id}")
    dataset = rt.dataset(ds_row)
    return ds_row, dataset, rt.split(dataset, split_row)


# ---- generation ---------------------------------------------------------------------------

def plan_generate(rt: Runtime, *, artifact_id: int, dataset_id: int, split_id: int, attacks: list[str],
                  subset: str = "train", shard_size: int = 256, limit: int | None = None,
                  experiment_id: int | None = None, parent_id: int | None = None,
                  step: str | None = None) -> Job:
    """Plan a generation job as shards: index ranges of the subset x attacks."""
    from ferqueue.attacks import parse_attack

    if not attacks:
        raise ConfigError("a generation job needs at least one attack")
    keys = [parse_attack(spec).key for spec in attacks]  # validates every spec before planning
    if len(set(keys)) != len(keys):
        raise ConfigError(f"attacks repeat: {attacks}")
    if shard_size < 1:
        raise ConfigError(f"shard size must be at least 1, got {shard_size}")
    split_row = ledger.get(rt.db, SplitRow, split_id)
    ledger.get(rt.db, ModelArtifact, artifact_id)
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose train or test")
    total = split_row.n_train if subset == "train" else split_row.n_test
    if limit is not None:
        total = min(total, limit)
    if total == 0:
        raise ConfigError(f"the {subset} subset of split {split_id} is empty")
    plans = []
    for spec, key in zip(attacks, keys, strict=True):
        for start in range(0, total, shard_size):
            plans.append({"index": len(plans), "attack_key": key, "attack_spec": spec,
                          "start": start, "stop": min(start + shard_size, total)})
    spec = {"artifact_id": artifact_id, "dataset_id": dataset_id, "split_id": split_id, "subset": subset,
            "attacks": list(attacks), "shard_size": shard_size, "limit": limit}
    return ledger.create_job(rt.db, "generate", spec, experiment_id=experiment_id, parent_id=parent_id,
                             step=step, executor=rt.settings.executor, shards=plans)


def run_shard(rt: Runtime, shard_id: int, progress: Progress = _noop) -> dict:
    """Attack one shard's slice and write its file. A shard already done is a no-op."""
    from ferqueue.attacks import parse_attack
    from ferqueue.store import write_shard

    shard = ledger.begin_shard(rt.db, shard_id, ledger.worker_name())
    if shard is None:
        return {"shard_id": shard_id, "status": "skipped"}
    job = ledger.get(rt.db, Job, shard.job_id)
    try:
        spec = job.spec
        artifact = ledger.get(rt.db, ModelArtifact, spec["artifact_id"])
        ds_row, dataset, split = _load_rows(rt, spec["dataset_id"], spec["split_id"])
        indices = _subset_indices(split, spec["subset"])[shard.start : shard.stop]
        x, y = dataset.take(indices)
        model = rt.model(artifact)
        attack = parse_attack(shard.attack_spec)
        started = time.perf_counter()
        result = attack(model, x, y, progress=lambda d, t: progress(f"job {job.id} current shard", d, t))
        seconds = time.perf_counter() - started
        info = write_shard(
            store_dir(rt, job.id), shard.index, result, source_index=indices,
            attrs={"model_sha256": artifact.sha256, "dataset_fingerprint": ds_row.fingerprint,
                   "split_fingerprint": split.fingerprint, "image_size": ds_row.image_size,
                   "subset": spec["subset"], "job_id": job.id, "start": shard.start, "stop": shard.stop,
                   "attack_key": shard.attack_key, "class_names": list(ds_row.class_names)},
        )
    except BaseException as exc:
        if ledger.get(rt.db, Shard, shard_id).status == "done":
            # a concurrent delivery finished this shard (and may have discarded our partial file)
            return {"shard_id": shard_id, "status": "lost_race"}
        ledger.fail_shard(rt.db, shard_id, _describe(exc))
        raise
    if not ledger.complete_shard(rt.db, shard_id, info, seconds):
        # another delivery of this shard recorded its file first; ours is surplus
        recorded = ledger.get(rt.db, Shard, shard_id)
        if recorded.path != str(info.path):
            info.path.unlink(missing_ok=True)
        return {"shard_id": shard_id, "status": "lost_race"}
    return {"shard_id": shard_id, "status": "done", "n": info.n_examples, "seconds": seconds}


def merge_if_complete(rt: Runtime, job_id: int) -> bool:
    """Merge the job's store when every shard is done; only one caller ever merges."""
    if not ledger.claim_merge(rt.db, job_id):
        return False
    run_merge(rt, job_id)
    return True


def run_merge(rt: Runtime, job_id: int) -> dict:
    from ferqueue.store import merge_shards

    job = ledger.get(rt.db, Job, job_id)
    if job.status != "merging":
        raise LedgerError(f"job {job_id} is {job.status}, not merging")
    try:
        rows = ledger.shards(rt.db, job_id)
        artifact = ledger.get(rt.db, ModelArtifact, job.spec["artifact_id"])
        ds_row = ledger.get(rt.db, DatasetRow, job.spec["dataset_id"])
        split_row = ledger.get(rt.db, SplitRow, job.spec["split_id"])
        started = time.perf_counter()
        out = store_dir(rt, job_id) / "store.h5"
        sha, size = merge_shards(
            [{"index": r.index, "attack_key": r.attack_key, "start": r.start, "stop": r.stop, "path": r.path,
              "sha256": r.sha256, "size_bytes": r.size_bytes} for r in rows],
            out,
            attrs={"model_sha256": artifact.sha256, "dataset_fingerprint": ds_row.fingerprint,
                   "split_fingerprint": split_row.fingerprint, "image_size": ds_row.image_size,
                   "subset": job.spec["subset"], "job_id": job_id, "artifact_id": artifact.id,
                   "class_names": list(ds_row.class_names)},
        )
        merge_seconds = time.perf_counter() - started
        result = {
            "job_id": job_id,
            "n_examples": int(sum(r.n_examples for r in rows)),
            "n_success": int(sum(r.n_success for r in rows)),
            "shard_seconds": float(sum(r.seconds for r in rows)),
            "merge_seconds": merge_seconds,
            "queries": int(sum(r.queries for r in rows)),
        }
        ledger.complete_merge(rt.db, job_id, str(out), sha, size, result)
        discard_unrecorded_files(store_dir(rt, job_id), keep={out, *(Path(r.path) for r in rows)})
        return result
    except BaseException as exc:
        ledger.fail_job(rt.db, job_id, _describe(exc))
        raise


def run_claimed_merge(rt: Runtime, job_id: int) -> dict:
    """Merge a job that claim_merge moved to 'merging', at most once at a time.

    A redelivered or duplicated merge finds the job already done, or another process holding
    the store's merge lock, and does nothing; the lock dies with its holder, so the
    redelivery of a merge whose worker was killed can take over.
    """
    directory = store_dir(rt, job_id)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".merge.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return {"job_id": job_id, "status": "merging elsewhere"}
        job = ledger.get(rt.db, Job, job_id)
        if job.status != "merging":
            return {"job_id": job_id, "status": f"skipped: job is {job.status}"}
        return run_merge(rt, job_id)


def discard_unrecorded_files(directory: Path, keep: set[Path]) -> list[Path]:
    """Delete what killed or losing attempts left in a store folder: half-written temporary
    files and shard files the ledger does not point at. Returns what was deleted."""
    kept = {Path(p).resolve() for p in keep}
    gone = []
    for pattern in (".shard-*.h5.tmp", ".store-*.h5.tmp", "shard-*.h5"):
        for path in directory.glob(pattern):
            if path.resolve() not in kept:
                path.unlink(missing_ok=True)
                gone.append(path)
    return gone


# ---- training -----------------------------------------------------------------------------

def plan_train(rt: Runtime, *, dataset_id: int, split_id: int, architecture: str, mode: str = "standard",
               train: dict | None = None, weights: str = "auto", store_job_id: int | None = None,
               experiment_id: int | None = None, parent_id: int | None = None, step: str | None = None) -> Job:
    from ferqueue.models import MODEL_NAMES
    from ferqueue.train import TrainConfig

    if architecture not in MODEL_NAMES:
        raise ConfigError(f"unknown model {architecture!r}; choose one of {', '.join(MODEL_NAMES)}")
    config = TrainConfig(mode=mode, **(train or {}))  # validates before anything is queued
    if mode == "offline_adv" and store_job_id is None and parent_id is None:
        raise ConfigError("offline adversarial training needs a store (a finished generation job)")
    spec = {"dataset_id": dataset_id, "split_id": split_id, "architecture": architecture, "mode": mode,
            "train": config.to_dict(), "weights": weights, "store_job_id": store_job_id}
    return ledger.create_job(rt.db, "train", spec, experiment_id=experiment_id, parent_id=parent_id,
                             step=step, executor=rt.settings.executor)


def _stored_training_examples(rt: Runtime, store_job_id: int, ds_row, split) -> tuple[np.ndarray, np.ndarray, dict]:
    from ferqueue.store import AdversarialStore

    store_job = ledger.get(rt.db, Job, store_job_id)
    if store_job.kind != "generate" or store_job.status != "done":
        raise StoreError(f"job {store_job_id} is not a finished generation job ({store_job.kind}, {store_job.status})")
    store = AdversarialStore(store_job.store_path, store_job.store_sha256)
    store.check_provenance(dataset_fingerprint=ds_row.fingerprint, split_fingerprint=split.fingerprint)
    if store.attrs.get("subset") != "train":
        raise StoreError(f"store {store.path} was made from the {store.attrs.get('subset')} subset; "
                         "training on it would leak test images")
    xs, ys = [], []
    for key in store.attacks:
        part = store.read(key)
        xs.append(part["images"])
        ys.append(part["labels"])
    cost = store_job.result or {}
    return np.concatenate(xs), np.concatenate(ys), cost


def run_train(rt: Runtime, job_id: int, progress: Progress = _noop) -> dict:
    from ferqueue.models import build_model, save_model
    from ferqueue.train import TrainConfig, train_model

    job = ledger.get(rt.db, Job, job_id)
    if job.status == "done":
        return job.result
    if job.status == "cancelled":
        return {"status": "cancelled"}
    ledger.start_job(rt.db, job_id)
    spec = job.spec
    run = None
    try:
        ds_row, dataset, split = _load_rows(rt, spec["dataset_id"], spec["split_id"])
        run = ledger.run_for_job(
            rt.db, job_id, experiment_id=job.experiment_id, dataset_id=ds_row.id, split_id=spec["split_id"],
            architecture=spec["architecture"], mode=spec["mode"], store_job_id=spec.get("store_job_id"),
            params={"train": spec["train"], "weights": spec["weights"]},
        )
        rt.tensorflow()
        x_train, y_train = dataset.take(split.train)
        x_test, y_test = dataset.take(split.test)
        generation = {}
        if spec["mode"] == "offline_adv":
            x_adv, y_adv, generation = _stored_training_examples(rt, spec["store_job_id"], ds_row, split)
            x_train = np.concatenate([x_train, x_adv])
            y_train = np.concatenate([y_train, y_adv])
        config = TrainConfig(**spec["train"])
        built = build_model(spec["architecture"], len(ds_row.class_names), ds_row.image_size,
                            weights=spec["weights"], seed=config.seed)
        result = train_model(
            built.model, x_train, y_train, config, x_test, y_test,
            progress=lambda e, n, logs: progress(f"train {spec['architecture']} {spec['mode']}", e, n),
        )
        stem = f"{spec['architecture']}-{spec['mode']}-run{run.id}"
        path, sha = save_model(built.model, rt.settings.artifact_root, stem)
        artifact = ledger.register_artifact(
            rt.db, architecture=spec["architecture"], path=str(path), sha256=sha, num_params=built.num_params,
            image_size=ds_row.image_size, class_names=list(ds_row.class_names), weights=built.weights,
            size_bytes=path.stat().st_size,
        )
        ledger.update_run(
            rt.db, run.id, status="done", artifact_id=artifact.id, epochs_run=result.epochs_run,
            wall_seconds=result.wall_seconds, gradient_evals=result.gradient_evals,
            examples_seen=result.examples_seen, history=result.history, finished_at=ledger.now(),
            generation_seconds=(generation.get("shard_seconds", 0.0) + generation.get("merge_seconds", 0.0))
            if generation else None,
            generation_gradient_evals=generation.get("queries") if generation else None,
        )
        outcome = {"run_id": run.id, "artifact_id": artifact.id, "sha256": sha,
                   "val_accuracy": result.history["val_accuracy"][-1], "wall_seconds": result.wall_seconds}
        ledger.finish_job(rt.db, job_id, outcome)
        return outcome
    except BaseException as exc:
        if run is not None:
            ledger.update_run(rt.db, run.id, status="failed", error=_describe(exc), finished_at=ledger.now())
        ledger.fail_job(rt.db, job_id, _describe(exc))
        raise


# ---- evaluation ---------------------------------------------------------------------------

def plan_evaluate(rt: Runtime, *, artifact_id: int | None, dataset_id: int, split_id: int,
                  attacks: list[str], subset: str = "test", transfer_store_job_id: int | None = None,
                  limit: int | None = None, map_classes: bool = False, experiment_id: int | None = None,
                  parent_id: int | None = None, step: str | None = None) -> Job:
    """Plan an evaluation. ``map_classes``: the dataset's classes may differ from the model's and
    are mapped by emotion (cross-dataset); examples of unmapped classes are counted, not scored."""
    from ferqueue.attacks import parse_attack

    for spec in attacks:
        parse_attack(spec)
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose train or test")
    spec = {"artifact_id": artifact_id, "dataset_id": dataset_id, "split_id": split_id, "subset": subset,
            "attacks": list(attacks), "transfer_store_job_id": transfer_store_job_id, "limit": limit,
            "map_classes": bool(map_classes)}
    if map_classes and transfer_store_job_id is not None:
        raise ConfigError("transfer evaluation uses stored examples of the model's own dataset; "
                          "it cannot be combined with class mapping")
    return ledger.create_job(rt.db, "evaluate", spec, experiment_id=experiment_id, parent_id=parent_id,
                             step=step, executor=rt.settings.executor)


def run_evaluate(rt: Runtime, job_id: int, progress: Progress = _noop) -> dict:
    from ferqueue.attacks import parse_attack
    from ferqueue.evaluate import (
        evaluate_clean,
        evaluate_transfer,
        evaluate_whitebox,
        map_classes,
        mapped_subset,
    )
    from ferqueue.store import AdversarialStore

    job = ledger.get(rt.db, Job, job_id)
    if job.status == "done":
        return job.result
    if job.status == "cancelled":
        return {"status": "cancelled"}
    ledger.start_job(rt.db, job_id)
    spec = job.spec
    try:
        artifact = ledger.get(rt.db, ModelArtifact, spec["artifact_id"])
        ds_row, dataset, split = _load_rows(rt, spec["dataset_id"], spec["split_id"])
        mapping = None
        if list(artifact.class_names) != list(ds_row.class_names):
            if not spec.get("map_classes"):
                raise ConfigError(f"model {artifact.id} predicts {artifact.class_names}, dataset {ds_row.name} "
                                  f"has {ds_row.class_names}: use `ferqueue cross-eval` to map classes")
            mapping = map_classes(artifact.class_names, ds_row.class_names)
        if artifact.image_size != ds_row.image_size:
            raise ConfigError(f"model {artifact.id} takes {artifact.image_size}px images, dataset {ds_row.id} is "
                              f"{ds_row.image_size}px")
        indices = _subset_indices(split, spec["subset"])[: spec.get("limit")]
        x, y = dataset.take(indices)
        unmapped = None
        if mapping is not None:  # score in the model's classes; the left-out examples are recorded
            keep, y, unmapped = mapped_subset(mapping, y)
            x = x[keep]
            if not len(y):
                raise ConfigError(f"none of the {len(indices)} {spec['subset']} images of dataset {ds_row.name} "
                                  f"has a class the model knows ({unmapped['dataset_classes_without_counterpart']})")
        model = rt.model(artifact)
        classes = list(artifact.class_names)
        label = f"evaluate {artifact.architecture}#{artifact.id}"
        # cross-dataset: macro averages over the model classes the dataset has
        scored = None if mapping is None else mapping.scored_model_classes
        records = [evaluate_clean(model, x, y, classes, scored=scored)]
        for i, attack_spec in enumerate(spec["attacks"]):
            progress(label, i, len(spec["attacks"]))
            records.append(evaluate_whitebox(model, x, y, classes, parse_attack(attack_spec), scored=scored))
        progress(label, len(spec["attacks"]), len(spec["attacks"]))
        sources = {}
        if spec.get("transfer_store_job_id"):
            store_job = ledger.get(rt.db, Job, spec["transfer_store_job_id"])
            store = AdversarialStore(store_job.store_path, store_job.store_sha256)
            store.check_provenance(dataset_fingerprint=ds_row.fingerprint, split_fingerprint=split.fingerprint)
            for key in store.attacks:
                part = store.read(key, ("images", "labels", "source_index", "linf", "l0"))
                summary = next(s for s in store.summary() if s["attack_key"] == key)
                record = evaluate_transfer(model, part["images"], part["labels"], classes, summary["attack"],
                                           key, summary["params"], part["linf"], part["l0"])
                records.append(record)
                sources[id(record)] = store.attrs.get("artifact_id")
        run_id = _run_of_artifact(rt, artifact.id)
        rows = [
            {"experiment_id": job.experiment_id, "artifact_id": artifact.id, "training_run_id": run_id,
             "dataset_id": ds_row.id, "split_id": spec["split_id"], "subset": spec["subset"],
             "source_artifact_id": sources.get(id(rec)), "unmapped": _unmapped_record(unmapped, rec, mapping),
             **rec.columns()}
            for rec in records
        ]
        ids = ledger.replace_evaluations(rt.db, job_id, rows)
        outcome = {"evaluation_ids": ids, "artifact_id": artifact.id,
                   "clean_accuracy": records[0].accuracy}
        ledger.finish_job(rt.db, job_id, outcome)
        return outcome
    except BaseException as exc:
        ledger.fail_job(rt.db, job_id, _describe(exc))
        raise


def _unmapped_record(unmapped: dict | None, record, mapping) -> dict | None:
    """What class mapping left out, plus how often the model answered with a class that has no
    counterpart in the dataset (always an error, reported so that it is not a mystery)."""
    if unmapped is None:
        return None
    counts = {}
    if record.predictions is not None:
        for name in mapping.unmapped_model_classes:
            counts[name] = int(np.sum(record.predictions == mapping.model_classes.index(name)))
    return {**unmapped, "predicted_model_classes_without_counterpart": counts}


def _run_of_artifact(rt: Runtime, artifact_id: int) -> int | None:
    with rt.db.session() as s:
        return s.scalar(select(TrainingRun.id).where(TrainingRun.artifact_id == artifact_id))


# ---- pipelines: a DAG of child jobs, advanced whenever a child finishes ---------------------

def plan_pipeline(rt: Runtime, steps: list[dict], *, experiment_id: int | None = None,
                  kind: str = "pipeline", meta: dict | None = None) -> Job:
    """``steps``: dicts with name, kind (generate/train/evaluate), args (the plan_* keyword
    arguments) and refs ({arg: "other_step.result_field"}), in a valid order."""
    names = set()
    for step in steps:
        for ref in step.get("refs", {}).values():
            if ref.split(".")[0] not in names:
                raise ConfigError(f"step {step['name']} refers to {ref}, which is not an earlier step")
        names.add(step["name"])
    return ledger.create_job(rt.db, kind, {"steps": steps, **(meta or {})}, experiment_id=experiment_id,
                             executor=rt.settings.executor)


_PLANNERS = {"generate": plan_generate, "train": plan_train, "evaluate": plan_evaluate}


def advance_pipeline(rt: Runtime, pipeline_id: int) -> list[int]:
    """Create the child jobs whose dependencies are done; return their ids (to be run or
    enqueued). Finishes or fails the pipeline when its children say so."""
    pipeline = ledger.get(rt.db, Job, pipeline_id)
    if pipeline.status in ("done", "failed", "cancelled"):
        return []
    ledger.start_job(rt.db, pipeline_id)
    existing = {job.step: job for job in ledger.children(rt.db, pipeline_id)}
    failed = [job for job in existing.values() if job.status in ("failed", "cancelled")]
    if failed:
        ledger.fail_job(rt.db, pipeline_id, f"step {failed[0].step} (job {failed[0].id}) {failed[0].status}: "
                                            f"{failed[0].error or ''}")
        return []
    created = []
    for step in pipeline.spec["steps"]:
        if step["name"] in existing:
            continue
        refs = step.get("refs", {})
        deps = [ref.split(".")[0] for ref in refs.values()] + step.get("after", [])
        if not all(dep in existing and existing[dep].status == "done" for dep in deps):
            continue
        args = dict(step["args"])
        for arg, ref in refs.items():
            dep, field = ref.split(".")
            args[arg] = existing[dep].result[field]
        try:
            job = _PLANNERS[step["kind"]](rt, experiment_id=pipeline.experiment_id, parent_id=pipeline_id,
                                          step=step["name"], **args)
        except IntegrityError:
            continue  # a concurrent advance created this step first
        existing[step["name"]] = job
        created.append(job.id)
    if not created and len(existing) == len(pipeline.spec["steps"]) and all(
        job.status == "done" for job in existing.values()
    ):
        ledger.finish_job(rt.db, pipeline_id, {"children": {name: job.id for name, job in existing.items()}})
    return created


# ---- the local executor -------------------------------------------------------------------

class LocalExecutor:
    """Runs jobs in this process, one step after another."""

    name = "local"

    def __init__(self, rt: Runtime, progress: Progress = _noop):
        self.rt = rt
        self.progress = progress

    def submit(self, job_id: int) -> None:
        self.run(job_id)

    def run(self, job_id: int) -> None:
        job = ledger.get(self.rt.db, Job, job_id)
        if job.kind == "generate":
            if job.status == "merging":  # an earlier merge died half-way; redo it
                run_claimed_merge(self.rt, job_id)
                return
            for shard in ledger.unfinished_shards(self.rt.db, job_id):
                if shard.status != "cancelled":
                    run_shard(self.rt, shard.id, self.progress)
                    self.progress(f"job {job_id} shards", shard.index + 1, job.n_shards)
            merge_if_complete(self.rt, job_id)
        elif job.kind == "train":
            run_train(self.rt, job_id, self.progress)
        elif job.kind == "evaluate":
            run_evaluate(self.rt, job_id, self.progress)
        elif job.kind in ("pipeline", "compare"):
            self._run_pipeline(job_id)
        else:
            raise LedgerError(f"job {job_id} has unknown kind {job.kind}")

    def _run_pipeline(self, pipeline_id: int) -> None:
        while True:
            ready = advance_pipeline(self.rt, pipeline_id)
            if not ready:
                pending = [j for j in ledger.children(self.rt.db, pipeline_id) if j.status != "done"]
                runnable = [j for j in pending if j.status in ("pending", "running", "merging")]
                if not runnable:
                    return
                ready = [j.id for j in runnable]  # resume: children left unfinished earlier
            for child in ready:
                try:
                    self.run(child)
                except BaseException as exc:
                    ledger.fail_job(self.rt.db, child, _describe(exc))
                    advance_pipeline(self.rt, pipeline_id)  # records the failure on the pipeline
                    raise


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FerqueueError):
        return f"{type(exc).__name__}: {exc}"
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
