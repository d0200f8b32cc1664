"""Generation jobs: adversarial examples of a split's subset, one shard per index range x attack,
merged into one store once the last shard is done."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ferqueue.db import ledger
from ferqueue.errors import ConfigError, StoreError
from ferqueue.jobs.checks import (
    check_attacks_fit,
    check_limit,
    check_model_fits,
    check_subset,
    required,
)
from ferqueue.jobs.registry import Finished, ShardOutput, Spec, register
from ferqueue.jobs.sharded import FileShards


@dataclass(frozen=True)
class GenerateSpec(Spec):
    artifact_id: int | None  # None only inside a pipeline, until the step it refers to is done
    dataset_id: int
    split_id: int
    attacks: list[str] = field(default_factory=list)
    subset: str = "train"
    shard_size: int = 256
    limit: int | None = None

    def __post_init__(self):
        from ferqueue.attacks import parse_attack

        if not self.attacks:
            raise ConfigError("a generation job needs at least one attack")
        keys = [parse_attack(spec).key for spec in self.attacks]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"attacks repeat: {self.attacks}")
        if isinstance(self.shard_size, bool) or not isinstance(self.shard_size, int) or self.shard_size < 1:
            raise ConfigError(f"shard size must be at least 1, got {self.shard_size}")
        check_subset(self.subset)
        check_limit(self.limit)


@register
class Generate(FileShards):
    name = "generate"
    spec_type = GenerateSpec
    queue = "generate"
    shard_task = "ferqueue.generate_shard"
    finish_task = "ferqueue.merge_store"
    finish_name = "merge"

    def check(self, rt, spec: GenerateSpec, partial: bool = False) -> None:
        ds_row, split_row = rt.records(spec.dataset_id, spec.split_id)
        if self._total(split_row, spec) == 0:
            raise ConfigError(f"the {spec.subset} subset of split {split_row.id} is empty")
        check_attacks_fit(spec.attacks, ds_row.image_size)
        if required(spec.artifact_id, "a generation job's source model (artifact id)", partial):
            check_model_fits(ledger.artifact(rt.db, spec.artifact_id), ds_row)

    @staticmethod
    def _total(split_row, spec: GenerateSpec) -> int:
        total = split_row.size(spec.subset)
        return total if spec.limit is None else min(total, spec.limit)

    def plan_shards(self, rt, spec: GenerateSpec) -> list[dict]:
        from ferqueue.attacks import parse_attack

        total = self._total(ledger.split(rt.db, spec.split_id), spec)
        plans = []
        for attack_spec in spec.attacks:
            key = parse_attack(attack_spec).key
            for start in range(0, total, spec.shard_size):
                plans.append({"index": len(plans), "attack_key": key, "attack_spec": attack_spec,
                              "start": start, "stop": min(start + spec.shard_size, total)})
        return plans

    def run_shard(self, rt, job, shard, progress) -> ShardOutput:
        """Attack one shard's slice and write its file."""
        from ferqueue.attacks import parse_attack
        from ferqueue.store import write_shard

        spec = self.spec(job.spec)
        artifact = ledger.artifact(rt.db, spec.artifact_id)
        ds_row, dataset, split = rt.data(spec.dataset_id, spec.split_id)
        indices = split.subset(spec.subset)[shard.start : shard.stop]
        x, y = dataset.take(indices)
        model = rt.model(artifact)
        started = time.perf_counter()
        result = parse_attack(shard.attack_spec)(
            model, x, y, ids=indices, progress=lambda done, total: progress(f"job {job.id} current shard", done, total))
        seconds = time.perf_counter() - started
        written = write_shard(
            rt.store_dir(job.id), shard.index, result, source_index=indices, originals=x,
            attrs={"model_sha256": artifact.sha256, "dataset_fingerprint": ds_row.fingerprint,
                   "split_fingerprint": split.fingerprint, "image_size": ds_row.image_size,
                   "subset": spec.subset, "job_id": job.id, "start": shard.start, "stop": shard.stop,
                   "attack_key": shard.attack_key, "class_names": list(ds_row.class_names)},
        )
        return ShardOutput(path=rt.store_put(written.path), sha256=written.sha256,
                           size_bytes=written.size_bytes, n_examples=len(indices), n_success=int(result.success.sum()),
                           queries=int(result.queries.sum()), seconds=seconds)

    def finish(self, rt, job, progress) -> Finished:
        """Merge the verified shards into the job's store (under the job's lease)."""
        from ferqueue.store import merge_shards

        spec = self.spec(job.spec)
        directory = rt.store_dir(job.id)
        rows = ledger.shards(rt.db, job.id)
        artifact = ledger.artifact(rt.db, spec.artifact_id)
        ds_row = ledger.dataset(rt.db, spec.dataset_id)
        split_row = ledger.split(rt.db, spec.split_id)
        started = time.perf_counter()
        try:
            merged = merge_shards(
                [{"index": r.index, "attack_key": r.attack_key, "start": r.start, "stop": r.stop,
                  "path": rt.store_file(r.path, r.sha256, r.size_bytes), "sha256": r.sha256, "size_bytes": r.size_bytes,
                  "n_success": r.n_success, "queries": r.queries} for r in rows],
                directory,
                attrs={"model_sha256": artifact.sha256, "dataset_fingerprint": ds_row.fingerprint,
                       "split_fingerprint": split_row.fingerprint, "image_size": ds_row.image_size,
                       "subset": spec.subset, "job_id": job.id, "artifact_id": artifact.id,
                       "class_names": list(ds_row.class_names)},
            )
        except StoreError as exc:
            raise StoreError(f"{exc}; `ferqueue resume {job.id}` generates the damaged or missing shard again "
                             "and merges") from None
        result = {
            "job_id": job.id,
            "n_examples": int(sum(r.n_examples for r in rows)),
            "n_success": int(sum(r.n_success for r in rows)),
            "shard_seconds": float(sum(r.seconds for r in rows)),
            "merge_seconds": time.perf_counter() - started,
            "queries": int(sum(r.queries for r in rows)),
        }
        self.keep_only_recorded(rt, job.id, extra=(merged.path,))
        return Finished(result, store=(rt.store_put(merged.path), merged.sha256, merged.size_bytes))
