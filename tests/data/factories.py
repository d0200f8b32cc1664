"""Factories for real test data: images and CSV files written with PIL, and small Datasets."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from ferqueue.data import Dataset

SHARED_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"

# FER2013 CSV emotion codes, as the Kaggle CSV defines them.
FER_CODES = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}


def face_pixels(seed: int, side: int = 48) -> np.ndarray:
    """A distinct uint8 grayscale image per seed."""
    return np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)


def write_image(path: Path, seed: int, side: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(face_pixels(seed, side)).save(path)
    return path


def write_csv(
    path: Path, rows: list[tuple], header: tuple[str, ...] = ("emotion", "pixels", "Usage")
) -> Path:
    """rows: (emotion code, uint8 48x48 array or pixel string, usage...) in header order."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow([" ".join(map(str, v.ravel())) if isinstance(v, np.ndarray) else v for v in row])
    return path


def make_dataset(labels, subjects=None, subsets=None, name: str = "made") -> Dataset:
    """A real Dataset with 8x8 images (the split only reads labels, subjects and subsets)."""
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    return Dataset(
        name=name,
        source=f"/made/{name}",
        images=np.zeros((n, 8, 8, 3), dtype=np.float32),
        labels=labels,
        class_names=tuple(f"c{i}" for i in range(int(labels.max()) + 1)),
        subjects=None if subjects is None else np.asarray(subjects, dtype=str),
        subsets=None if subsets is None else np.asarray(subsets, dtype=str),
        ids=tuple(f"x{i}" for i in range(n)),
        fingerprint=f"{name}-{n}",
        image_size=8,
    )
