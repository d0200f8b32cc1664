"""Evaluation jobs: a model's clean, white-box and transfer metrics on a split's subset, written
to the results tables (one row per setting x attack)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ferqueue.db import ledger
from ferqueue.errors import ConfigError
from ferqueue.jobs.checks import (
    check_attacks_fit,
    check_image_size,
    check_limit,
    check_model_fits,
    check_subset,
    required,
)
from ferqueue.jobs.registry import Finished, JobKind, Spec, register


@dataclass(frozen=True)
class EvaluateSpec(Spec):
    """``map_classes``: the dataset's classes may differ from the model's and are mapped by
    emotion (cross-dataset); examples of unmapped classes are counted, not scored."""

    artifact_id: int | None  # None only inside a pipeline, until the step it refers to is done
    dataset_id: int
    split_id: int
    attacks: list[str] = field(default_factory=list)
    subset: str = "test"
    transfer_store_job_id: int | None = None
    limit: int | None = None
    map_classes: bool = False

    def __post_init__(self):
        from ferqueue.attacks import parse_attack

        for spec in self.attacks:
            parse_attack(spec)
        check_subset(self.subset)
        check_limit(self.limit)
        if self.map_classes and self.transfer_store_job_id is not None:
            raise ConfigError("transfer evaluation uses stored examples of the model's own dataset; "
                              "it cannot be combined with class mapping")


@register
class Evaluate(JobKind):
    name = "evaluate"
    spec_type = EvaluateSpec
    queue = "evaluate"
    finish_task = "ferqueue.evaluate"

    def check(self, rt, spec: EvaluateSpec, partial: bool = False) -> None:
        from ferqueue.evaluate import map_classes

        ds_row, _split_row = rt.records(spec.dataset_id, spec.split_id)
        check_attacks_fit(spec.attacks, ds_row.image_size)
        if required(spec.artifact_id, "an evaluation's model (artifact id)", partial):
            artifact = ledger.artifact(rt.db, spec.artifact_id)
            if spec.map_classes:
                check_image_size(artifact, ds_row)
                map_classes(artifact.class_names, ds_row.class_names)  # refuses disjoint classes
            else:
                check_model_fits(artifact, ds_row)

    def finish(self, rt, job, progress) -> Finished:
        from ferqueue.attacks import parse_attack
        from ferqueue.evaluate import evaluate_clean, evaluate_whitebox, map_classes, mapped_subset

        spec = self.spec(job.spec)
        artifact = ledger.artifact(rt.db, spec.artifact_id)
        ds_row, dataset, split = rt.data(spec.dataset_id, spec.split_id)
        mapping = map_classes(artifact.class_names, ds_row.class_names) if spec.map_classes else None
        indices = split.subset(spec.subset)[: spec.limit]
        x, y = dataset.take(indices)
        unmapped = None
        if mapping is not None:  # score in the model's classes; the left-out examples are recorded
            keep, y, unmapped = mapped_subset(mapping, y)
            x = x[keep]
            if not len(y):
                raise ConfigError(f"none of the {len(indices)} {spec.subset} images of dataset {ds_row.name} "
                                  f"has a class the model knows ({unmapped['dataset_classes_without_counterpart']})")
        model = rt.model(artifact)
        classes = list(artifact.class_names)
        label = f"evaluate {artifact.architecture}#{artifact.id}"
        # cross-dataset: macro averages over the model classes the dataset has
        scored = None if mapping is None else mapping.scored_model_classes
        records = [evaluate_clean(model, x, y, classes, scored=scored)]
        for i, attack_spec in enumerate(spec.attacks):
            progress(label, i, len(spec.attacks))
            records.append(evaluate_whitebox(model, x, y, classes, parse_attack(attack_spec), scored=scored))
        progress(label, len(spec.attacks), len(spec.attacks))
        if spec.transfer_store_job_id is not None:
            records += _transfer_records(rt, spec.transfer_store_job_id, ds_row, split, model, classes)
        run_id = ledger.run_of_artifact(rt.db, artifact.id)
        rows = [
            {"experiment_id": job.experiment_id, "artifact_id": artifact.id, "training_run_id": run_id,
             "dataset_id": ds_row.id, "split_id": spec.split_id, "subset": spec.subset,
             "unmapped": _unmapped_record(unmapped, rec, mapping),
             **rec.columns()}
            for rec in records
        ]
        ids = ledger.replace_evaluations(rt.db, job.id, rows)
        return Finished({"evaluation_ids": ids, "artifact_id": artifact.id, "clean_accuracy": records[0].accuracy})


def _transfer_records(rt, store_job_id: int, ds_row, split, model, classes) -> list:
    """The model scored on every attack of a stored generation job (examples made against another model)."""
    from ferqueue.evaluate import evaluate_transfer

    _store_job, store = rt.finished_store(store_job_id)
    store.check_provenance(dataset_fingerprint=ds_row.fingerprint, split_fingerprint=split.fingerprint)
    summaries = {s["attack_key"]: s for s in store.summary()}
    records = []
    for key in store.attacks:
        part = store.read(key, ("images", "labels", "source_index", "linf", "l0"))
        summary = summaries[key]
        records.append(evaluate_transfer(model, part["images"], part["labels"], classes, summary["attack"], key,
                                         summary["params"], part["linf"], part["l0"],
                                         source_artifact_id=store.attrs.get("artifact_id")))
    return records


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
