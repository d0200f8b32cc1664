"""The in-memory dataset: preprocessed images, labels, and the manifest facts that identify it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


# eq=False: comparing array fields element-wise is meaningless; compare fingerprints instead.
@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    source: str  # canonical spec string that reloads it
    images: np.ndarray  # float32 (N, S, S, 3) in [0, 1], read-only (possibly a memmap)
    labels: np.ndarray  # int64 (N,), indices into class_names
    class_names: tuple[str, ...]
    subjects: np.ndarray | None  # str (N,), or None when the dataset has no subject ids
    subsets: np.ndarray | None  # str (N,) of train/validation/test, or None
    ids: tuple[str, ...]
    fingerprint: str
    image_size: int

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """A writable float32 copy of the images at ``indices``, and their labels."""
        return np.array(self.images[indices], dtype=np.float32), np.array(self.labels[indices])

    def describe(self) -> dict:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {
            "name": self.name,
            "source": self.source,
            "fingerprint": self.fingerprint,
            "num_examples": len(self),
            "image_size": self.image_size,
            "class_names": list(self.class_names),
            "class_counts": {name: int(n) for name, n in zip(self.class_names, counts, strict=True)},
            "n_subjects": None if self.subjects is None else len(set(self.subjects.tolist())),
            "subsets": None if self.subsets is None else dict(sorted(Counter(self.subsets.tolist()).items())),
        }
