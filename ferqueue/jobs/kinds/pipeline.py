"""Pipelines: a DAG of child jobs, each step planned when the steps it depends on are done.

A step is ``{"name", "kind", "args", "refs", "after"}``: ``args`` are the fields of the
kind's spec, ``refs`` fill more of them from earlier steps' results (``{"artifact_id":
"train-x.artifact_id"}``) and ``after`` names steps to wait for without taking anything from
them. ``compare`` and ``sweep`` are the same thing under their own names, so that `ferqueue jobs` tells
them apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ferqueue.db import ledger
from ferqueue.errors import ConfigError, Conflict, FerqueueError, describe
from ferqueue.jobs.registry import JobKind, Spec, kind, plan, register
from ferqueue.vocabulary import CANCELLED, DONE, FAILED


def _dependencies(step: dict) -> list[str]:
    return [ref.split(".")[0] for ref in step.get("refs", {}).values()] + list(step.get("after", []))


@dataclass(frozen=True)
class PipelineSpec(Spec):
    steps: list[dict] = field(default_factory=list)

    def __post_init__(self):
        if not self.steps:
            raise ConfigError("a pipeline needs at least one step")
        names: set[str] = set()
        for step in self.steps:
            name = step.get("name")
            if not name or name in names:
                raise ConfigError(f"pipeline step names must be unique and not empty, got {name!r}")
            for dep in _dependencies(step):
                if dep not in names:
                    raise ConfigError(f"step {name} depends on {dep}, which is not an earlier step")
            self.step_spec(step, partial=True)  # every value checked before anything is recorded
            names.add(name)

    @staticmethod
    def step_spec(step: dict, partial: bool = False, results: dict | None = None) -> Spec:
        """The typed spec of a step; ``refs`` come from ``results`` ({step: result}), or stay
        None (``partial``) while those steps have not run."""
        step_kind = kind(step["kind"])
        if step_kind.composite:
            raise ConfigError(f"step {step['name']}: a {step['kind']} job cannot be a step of a pipeline")
        args = dict(step.get("args", {}))
        for arg, ref in step.get("refs", {}).items():
            dep, _, result_field = ref.partition(".")
            args[arg] = None if partial else results[dep][result_field]
        try:
            return step_kind.spec_type(**args)
        except TypeError as exc:  # an argument the kind's spec does not have
            raise ConfigError(f"step {step['name']}: {exc}") from None


@dataclass(frozen=True)
class CompareSpec(PipelineSpec):
    """Baseline vs offline vs online adversarial training (see ferqueue.plans.ComparePlan)."""


@register
class Pipeline(JobKind):
    name = "pipeline"
    spec_type = PipelineSpec

    def check(self, rt, spec: PipelineSpec) -> None:
        for step in spec.steps:
            step_spec = spec.step_spec(step, partial=True)
            kind(step["kind"]).check(rt, step_spec, partial=bool(step.get("refs")))

    def advance(self, rt, job) -> list[int]:
        """Create the child jobs whose dependencies are done; return their ids (to be run or
        sent). Finishes or fails the pipeline when its children say so."""
        db = rt.db
        pipeline = ledger.job(db, job.id)
        if pipeline.final:
            return []
        ledger.start_job(db, pipeline.id)
        existing = {child.step: child for child in ledger.children(db, pipeline.id)}
        failed = [child for child in existing.values() if child.status in (FAILED, CANCELLED)]
        if failed:
            child = failed[0]
            ledger.fail_job(db, pipeline.id, f"step {child.step} (job {child.id}) {child.status}: {child.error or ''}")
            return []
        spec = self.spec(pipeline.spec)
        created = []
        for step in spec.steps:
            if step["name"] in existing:
                continue
            if not all(dep in existing and existing[dep].status == DONE for dep in _dependencies(step)):
                continue
            try:
                step_spec = spec.step_spec(step, results={name: child.result for name, child in existing.items()})
                child = plan(rt, step_spec, experiment_id=pipeline.experiment_id, parent_id=pipeline.id,
                             step=step["name"])
            except Conflict:
                continue  # a concurrent advance created this step first
            except FerqueueError as exc:
                ledger.fail_job(db, pipeline.id, f"step {step['name']} could not be planned: {describe(exc)}")
                return created
            existing[step["name"]] = child
            created.append(child.id)
        if not created and len(existing) == len(spec.steps) and all(c.status == DONE for c in existing.values()):
            ledger.finish_job(db, pipeline.id, {"children": {name: child.id for name, child in existing.items()}})
        return created


@register
class Compare(Pipeline):
    name = "compare"
    spec_type = CompareSpec


@dataclass(frozen=True)
class SweepSpec(PipelineSpec):
    """A training and an evaluation per configuration of a grid (see ferqueue.plans.SweepPlan)."""


@register
class Sweep(Pipeline):
    name = "sweep"
    spec_type = SweepSpec
