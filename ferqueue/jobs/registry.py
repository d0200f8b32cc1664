"""The table of job kinds: each a typed spec, a plan, the work of its units and a queue.

A job is made of units. A kind with shards (generation) has one unit per shard, run
anywhere in any order, and a finishing unit (the merge) that runs once, after the last
shard, for whoever wins ``ledger.claim_finish`` (and then holds the job's lease). A kind without shards (training,
evaluation) is one finishing unit. A composite kind (pipeline, compare) has no work of its
own: it creates child jobs as their dependencies finish.

Every module in ``ferqueue.jobs.kinds`` is imported when the table is first read, and each
registers its kinds with ``@register``: a new job kind is one file there.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from ferqueue.errors import ConfigError, LedgerError

Progress = Callable[[str, int, int], None]  # (label, done, total)


def no_progress(_label: str, _done: int, _total: int) -> None:
    pass


@dataclass(frozen=True)
class Spec:
    """What a job of one kind is asked to do; JSON in the ledger (ids and small values only).

    Subclasses are frozen dataclasses that check their own values in ``__post_init__``,
    without the ledger; ``JobKind.check`` does the checks that need it.
    """

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Spec:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LedgerError(f"a {cls.__name__} has no field {', '.join(unknown)}")
        return cls(**data)


@dataclass(frozen=True)
class ShardOutput:
    """What one shard's work produced, as the ledger records it."""

    path: str
    sha256: str
    size_bytes: int
    n_examples: int
    n_success: int
    queries: int
    seconds: float


@dataclass(frozen=True)
class Finished:
    """A finishing unit's outcome: the job's result, the store a merge wrote (path, sha256, size)
    and the evaluation rows an aggregation computed. The ledger records all of it in one
    transaction, and only while the unit still holds its lease."""

    result: dict
    store: tuple[str, str, int] | None = None
    evaluations: list[dict] | None = None


class JobKind:
    name: ClassVar[str]
    spec_type: ClassVar[type[Spec]]
    # the Celery queue its units run on; None for a composite kind, which has no units
    queue: ClassVar[str | None] = None
    # task names (what Flower shows): one shard, and the finishing unit
    shard_task: ClassVar[str | None] = None
    finish_task: ClassVar[str | None] = None
    # the finishing unit in words (a job's error names it when it gives up)
    finish_name: ClassVar[str] = "finishing unit"

    @property
    def sharded(self) -> bool:
        return self.shard_task is not None

    @property
    def composite(self) -> bool:
        return self.queue is None

    def spec(self, data: dict) -> Spec:
        return self.spec_type.from_json(data)

    def check(self, rt, spec: Spec, partial: bool = False) -> None:
        """Refuse a spec the ledger cannot satisfy (unknown ids, a model that cannot take the
        dataset), before anything is recorded. ``partial``: a pipeline step whose ids from
        earlier steps are still None; what those ids would decide is checked when it is planned."""

    def plan_shards(self, rt, spec: Spec) -> list[dict]:
        """The shard rows of a new job: dicts of index, attack_key, attack_spec, start, stop."""
        return []

    def run_shard(self, rt, job, shard, progress: Progress) -> ShardOutput:
        raise NotImplementedError

    def discard(self, rt, output: ShardOutput) -> None:
        """Remove what a shard attempt wrote when another attempt was recorded first."""

    def discard_finish(self, rt, job_id: int, finished: Finished) -> None:
        """Remove what a finishing unit wrote when it could not record it (its lease was taken
        over and another attempt finished the job)."""

    def finish(self, rt, job, progress: Progress) -> Finished:
        """The finishing unit: the merge of a sharded job, or the whole work of an unsharded one."""
        raise NotImplementedError

    def repair(self, rt, job) -> list[str]:
        """Before a resume: put back to pending whatever finished work was since lost or
        damaged, so that it is done again; what was reset, in words."""
        return []

    def advance(self, rt, job) -> list[int]:
        """Composite kinds: create the children whose dependencies are done; their ids."""
        raise NotImplementedError


_KINDS: dict[str, JobKind] = {}
_BY_SPEC: dict[type, JobKind] = {}
_loaded = False


def register(cls: type[JobKind]) -> type[JobKind]:
    kind = cls()
    if kind.name in _KINDS:
        raise RuntimeError(f"job kind {kind.name} is registered twice")
    _KINDS[kind.name] = kind
    _BY_SPEC[cls.spec_type] = kind
    return cls


def registered() -> dict[str, JobKind]:
    """Every registered kind by name (the modules of ferqueue.jobs.kinds, imported once)."""
    global _loaded
    if not _loaded:
        package = importlib.import_module("ferqueue.jobs.kinds")

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        _loaded = True
    return _KINDS


def kind(name: str) -> JobKind:
    found = registered().get(name)
    if found is None:
        raise LedgerError(f"unknown job kind {name!r}; known: {', '.join(sorted(registered()))}")
    return found


def kind_of(spec: Spec) -> JobKind:
    registered()
    found = _BY_SPEC.get(type(spec))
    if found is None:
        raise ConfigError(f"{type(spec).__name__} is not the spec of a registered job kind")
    return found


def check(rt, spec: Spec) -> None:
    """Everything ``plan`` would refuse, without recording anything."""
    kind_of(spec).check(rt, spec)


def plan(rt, spec: Spec, *, experiment_id: int | None = None, parent_id: int | None = None,
         step: str | None = None):
    """Check ``spec`` and record a new job of its kind, with its shards, in one transaction."""
    from ferqueue.db import ledger

    job_kind = kind_of(spec)
    job_kind.check(rt, spec)
    return ledger.create_job(rt.db, job_kind.name, spec.to_json(), experiment_id=experiment_id,
                             parent_id=parent_id, step=step, executor=rt.settings.executor,
                             shards=job_kind.plan_shards(rt, spec))
