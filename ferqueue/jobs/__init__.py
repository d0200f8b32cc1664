"""Jobs: one registry of kinds, one way to run their units, one place that settles their end.

    spec = GenerateSpec(artifact_id=3, dataset_id=1, split_id=1, attacks=["fgsm:eps=0.01"])
    job = plan(rt, spec)                 # checked, recorded with its shards
    LocalExecutor(rt).run(job.id)        # or ferqueue.queue.CeleryExecutor(rt, app).submit(job.id)
"""

from ferqueue.jobs.execution import Executor, InFlight, LocalExecutor, Unit, complete, run_unit
from ferqueue.jobs.kinds.evaluate import EvaluateSpec
from ferqueue.jobs.kinds.generate import GenerateSpec
from ferqueue.jobs.kinds.pipeline import CompareSpec, PipelineSpec, SweepSpec
from ferqueue.jobs.kinds.train import TrainSpec
from ferqueue.jobs.registry import (
    Finished,
    JobKind,
    Progress,
    ShardOutput,
    Spec,
    check,
    kind,
    kind_of,
    no_progress,
    plan,
    register,
    registered,
)

__all__ = [
    "CompareSpec",
    "EvaluateSpec",
    "Executor",
    "Finished",
    "GenerateSpec",
    "InFlight",
    "JobKind",
    "LocalExecutor",
    "PipelineSpec",
    "Progress",
    "ShardOutput",
    "Spec",
    "SweepSpec",
    "TrainSpec",
    "Unit",
    "check",
    "complete",
    "kind",
    "kind_of",
    "registered",
    "no_progress",
    "plan",
    "register",
    "run_unit",
]
