"""Helpers shared by tests (a module of its own: several conftest.py files exist)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


def service_unavailable(what: str, reason: object) -> None:
    """A failure under FERQUEUE_REQUIRE_SERVICES=1 (CI, where every service must be there), else a skip."""
    if os.environ.get("FERQUEUE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (FERQUEUE_REQUIRE_SERVICES=1) but unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


def register_tiny(rt, dataset, split_kind="random", model_file=None):
    """Register dataset, split and (optionally) the tiny artifact in rt's ledger."""
    from ferqueue.data import make_split
    from ferqueue.db import ledger

    ds_row = ledger.register_dataset(rt.db, dataset)
    split = make_split(dataset, split_kind, seed=1)
    split_row = ledger.register_split(rt.db, ds_row.id, split)
    artifact = None
    if model_file is not None:
        path, sha, params = model_file
        artifact = ledger.register_artifact(rt.db, architecture="tiny_cnn", path=str(path), sha256=sha,
                                            num_params=params, image_size=dataset.image_size,
                                            class_names=list(dataset.class_names), weights="random",
                                            size_bytes=Path(path).stat().st_size)
    return ds_row, split_row, split, artifact


class Deferred:
    """An executor that runs nothing: it keeps every unit dispatched to it, so a test can run
    shards one by one and decide when (and whether) the job's finishing unit runs."""

    name = "deferred"

    def __init__(self, rt):
        from ferqueue.jobs import no_progress

        self.rt = rt
        self.progress = no_progress
        self.units = []

    def dispatch(self, unit, in_flight=frozenset()):
        self.units.append(unit)
        return []


def run_shards(rt, job_id: int) -> Deferred:
    """Run every unfinished shard of a job here, but not its finishing unit (held by the
    returned executor once the last shard claimed it)."""
    from ferqueue.db import ledger
    from ferqueue.jobs import Unit, run_unit

    deferred = Deferred(rt)
    job = ledger.job(rt.db, job_id)
    for shard in ledger.unfinished_shards(rt.db, job_id):
        run_unit(deferred, Unit(job.kind, job_id, shard.id))
    return deferred


def run_job(rt, job_id: int):
    """Run a job to its end here; its final record."""
    from ferqueue.db import ledger
    from ferqueue.jobs import LocalExecutor

    LocalExecutor(rt).run(job_id)
    return ledger.job(rt.db, job_id)


def flip_byte(path) -> None:
    """Damage a file as a bad disk would: one bit pattern in its middle, inverted."""
    raw = bytearray(Path(path).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    Path(path).write_bytes(bytes(raw))


def write_face_folder(root: Path, n: int = 56, size: int = 32) -> Path:
    """A CK+-style folder of PNG faces (synthetic drawings, subject-prefixed names) in the
    synthetic dataset's classes: a dataset that exists only where this folder is."""
    import numpy as np
    from PIL import Image

    from ferqueue.data.synthetic import SYNTHETIC_CLASSES, synthetic_face

    for i in range(n):
        image, label, subject = synthetic_face(i, size)
        path = Path(root) / SYNTHETIC_CLASSES[label] / f"{subject}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255).astype(np.uint8)).save(path)
    return Path(root)
