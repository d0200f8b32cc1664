"""Helpers shared by tests (a module of its own: several conftest.py files exist)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATASETS = SHARED / "datasets"


def register_tiny(rt, dataset, split_kind="random", model_file=None):
    """Register dataset, split and (optionally) the tiny artifact in rt's ledger."""
    from ferqueue import ledger
    from ferqueue.data import make_split

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
