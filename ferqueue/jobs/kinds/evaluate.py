"""Evaluation jobs: a model's clean, white-box and transfer metrics on a split's subset.

Planned as shards, like generation: index ranges of the subset x (clean, each white-box
attack), plus ranges of each attack of a transfer store. A shard writes every example's
outcome (label, clean and adversarial prediction and confidence, success, queries, L-inf, L0)
to a file of the job's folder; the last shard to finish claims the aggregation, which runs
once and computes the metrics from the outcomes with scikit-learn into the results tables
(one row per setting x attack).
"""

from __future__ import annotations

import time
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
from ferqueue.jobs.registry import Finished, ShardOutput, Spec, register
from ferqueue.jobs.sharded import FileShards
from ferqueue.vocabulary import CLEAN, TRANSFER, WHITEBOX

SHARD_SIZE = 1024


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
    shard_size: int = SHARD_SIZE

    def __post_init__(self):
        from ferqueue.attacks import parse_attack

        keys = [parse_attack(spec).key for spec in self.attacks]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"attacks repeat: {self.attacks}")
        check_subset(self.subset)
        check_limit(self.limit)
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ConfigError(f"shard size must be at least 1, got {self.shard_size}")
        if self.map_classes and self.transfer_store_job_id is not None:
            raise ConfigError("transfer evaluation uses stored examples of the model's own dataset; "
                              "it cannot be combined with class mapping")


def part_key(setting: str, key: str) -> str:
    """What a shard evaluates: 'clean:none', 'whitebox:fgsm-eps0.01', 'transfer:fgsm-eps0.01'."""
    return f"{setting}:{key}"


@register
class Evaluate(FileShards):
    name = "evaluate"
    spec_type = EvaluateSpec
    queue = "evaluate"
    shard_task = "ferqueue.evaluate_shard"
    finish_task = "ferqueue.aggregate_evaluation"
    finish_name = "aggregation"

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
        if spec.transfer_store_job_id is not None:
            rt.finished_store(spec.transfer_store_job_id)

    def plan_shards(self, rt, spec: EvaluateSpec) -> list[dict]:
        from ferqueue.attacks import parse_attack

        total = ledger.split(rt.db, spec.split_id).size(spec.subset)
        total = total if spec.limit is None else min(total, spec.limit)
        # the dearest parts first: workers that finish the cheap shards last end together
        attacks = sorted(spec.attacks, key=lambda a: -parse_attack(a).passes_per_image)
        parts = [(part_key(WHITEBOX, parse_attack(a).key), a, total) for a in attacks]
        if spec.transfer_store_job_id is not None:
            _job, store = rt.finished_store(spec.transfer_store_job_id)
            parts += [(part_key(TRANSFER, key), key, store.size(key)) for key in store.attacks]
        parts.append((part_key(CLEAN, "none"), "none", total))
        plans = []
        for key, attack_spec, n in parts:
            for start in range(0, n, spec.shard_size):
                plans.append({"index": len(plans), "attack_key": key, "attack_spec": attack_spec, "start": start,
                              "stop": min(start + spec.shard_size, n)})
        return plans

    def run_shard(self, rt, job, shard, progress) -> ShardOutput:
        """Every example of the shard's range, clean, attacked or transferred, as outcomes."""
        from ferqueue.attacks import parse_attack
        from ferqueue.evaluate import (
            clean_outcomes,
            map_classes,
            mapped_subset,
            transfer_outcomes,
            whitebox_outcomes,
        )
        from ferqueue.store import write_outcomes

        spec = self.spec(job.spec)
        artifact = ledger.artifact(rt.db, spec.artifact_id)
        model = rt.model(artifact)
        setting, _, key = shard.attack_key.partition(":")
        left_out: dict[str, int] = {}
        started = time.perf_counter()
        if setting == TRANSFER:
            _store_job, store = rt.finished_store(spec.transfer_store_job_id)
            part = store.read(key, ("images", "labels", "source_index", "linf", "l0"), rows=slice(shard.start, shard.stop))
            outcomes = transfer_outcomes(model, part["images"], part["labels"], part["source_index"], part["linf"],
                                         part["l0"])
        else:
            ds_row, dataset, split = rt.data(spec.dataset_id, spec.split_id)
            indices = split.subset(spec.subset)[shard.start : shard.stop]
            x, y = dataset.take(indices)
            if spec.map_classes:  # scored in the model's classes; the rest counted
                keep, y, unmapped = mapped_subset(map_classes(artifact.class_names, ds_row.class_names), y)
                x, indices = x[keep], indices[keep]
                left_out = unmapped["dataset_classes_without_counterpart"]
            if setting == CLEAN:
                outcomes = clean_outcomes(model, x, y, indices)
            else:
                label = f"job {job.id} shard {shard.index}"
                result = parse_attack(shard.attack_spec)(model, x, y, ids=indices,
                                                         progress=lambda d, t: progress(label, d, t))
                outcomes = whitebox_outcomes(result, indices)
        seconds = time.perf_counter() - started
        written = write_outcomes(rt.store_dir(job.id), shard.index, outcomes,
                                 {"part": shard.attack_key, "start": shard.start, "stop": shard.stop,
                                  "left_out": left_out, "job_id": job.id, "seconds": seconds})
        return ShardOutput(path=rt.store_put(written.path), sha256=written.sha256,
                           size_bytes=written.size_bytes, n_examples=len(outcomes["labels"]),
                           n_success=int(outcomes["success"].sum()), queries=int(outcomes["queries"].sum()),
                           seconds=seconds)

    def finish(self, rt, job, progress) -> Finished:
        """The aggregation: every part's outcomes, read in order, become one evaluation row."""
        from ferqueue.attacks import parse_attack
        from ferqueue.evaluate import join_outcomes, map_classes, record_from_outcomes
        from ferqueue.store import read_outcomes

        spec = self.spec(job.spec)
        artifact = ledger.artifact(rt.db, spec.artifact_id)
        ds_row, _split_row = rt.records(spec.dataset_id, spec.split_id)
        mapping = map_classes(artifact.class_names, ds_row.class_names) if spec.map_classes else None
        scored = None if mapping is None else mapping.scored_model_classes
        classes = list(artifact.class_names)
        parts: dict[str, list] = {}
        for shard in ledger.shards(rt.db, job.id):  # in index order: parts, and ranges within each
            parts.setdefault(shard.attack_key, []).append(shard)
        store = rt.finished_store(spec.transfer_store_job_id)[1] if spec.transfer_store_job_id is not None else None
        summaries = {row["attack_key"]: row for row in store.summary()} if store is not None else {}
        records, left_out = [], {}
        # the clean record first (the results tables' order), the attacks in the order asked for
        order = [part_key(CLEAN, "none")] + [part_key(WHITEBOX, parse_attack(a).key) for a in spec.attacks]
        for key, shards in sorted(parts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
            read = [read_outcomes(rt.store_file(s.path, s.sha256, s.size_bytes), s.sha256, s.size_bytes) for s in shards]
            outcomes = join_outcomes([arrays for arrays, _attrs in read])
            seconds = float(sum(s.seconds or 0.0 for s in shards))
            setting, _, name = key.partition(":")
            if setting == CLEAN:
                for _arrays, attrs in read:
                    for cls, count in (attrs.get("left_out") or {}).items():
                        left_out[cls] = left_out.get(cls, 0) + int(count)
                if mapping is not None and not len(outcomes["labels"]):
                    raise ConfigError(f"none of the {sum(left_out.values())} {spec.subset} images of dataset "
                                      f"{ds_row.name} has a class the model knows ({left_out})")
                records.append(record_from_outcomes(CLEAN, outcomes, classes, scored=scored, seconds=seconds))
            elif setting == WHITEBOX:
                attack = parse_attack(shards[0].attack_spec)
                records.append(record_from_outcomes(WHITEBOX, outcomes, classes, attack=attack.name, attack_key=name,
                                                    params=attack.params, scored=scored, seconds=seconds))
            else:
                summary = summaries[name]
                records.append(record_from_outcomes(TRANSFER, outcomes, classes, attack=summary["attack"],
                                                    attack_key=name, params=summary["params"], seconds=seconds,
                                                    source_artifact_id=store.attrs.get("artifact_id")))
        unmapped = None
        if mapping is not None:
            unmapped = {"mapping": mapping.pairs(), "dataset_classes_without_counterpart": left_out,
                        "model_classes_without_counterpart": mapping.unmapped_model_classes,
                        "examples_scored": records[0].n, "examples_left_out": int(sum(left_out.values()))}
        run_id = ledger.run_of_artifact(rt.db, artifact.id)
        rows = [{"experiment_id": job.experiment_id, "artifact_id": artifact.id, "training_run_id": run_id,
                 "dataset_id": ds_row.id, "split_id": spec.split_id, "subset": spec.subset,
                 "unmapped": _unmapped_record(unmapped, rec, mapping), **rec.columns()} for rec in records]
        self.keep_only_recorded(rt, job.id)
        # the rows are written with the job's result, in one transaction (their ids become the
        # result's evaluation_ids), and only if this aggregation still holds the job's lease
        return Finished({"artifact_id": artifact.id, "clean_accuracy": records[0].accuracy}, evaluations=rows)


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
