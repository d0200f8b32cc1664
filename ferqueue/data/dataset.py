"""The in-memory dataset: preprocessed images, labels, and the manifest facts that identify it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np


def _read_rows(images: np.memmap, indices: np.ndarray) -> np.ndarray:
    """Rows of a C-ordered memory-mapped array, read from its file run by run of consecutive indices."""
    out = np.empty((len(indices), *images.shape[1:]), images.dtype)
    if not len(indices):
        return out
    row_bytes = int(np.prod(images.shape[1:])) * images.dtype.itemsize
    order = np.argsort(indices, kind="stable")
    ordered = indices[order]
    if ordered[0] < 0 or ordered[-1] >= len(images):
        raise IndexError(f"index {ordered[0] if ordered[0] < 0 else ordered[-1]} is out of range for {len(images)} images")
    breaks = np.flatnonzero(np.diff(ordered) != 1) + 1
    flat = out.reshape(len(out), -1).view(np.uint8).reshape(len(out), row_bytes)
    sorted_rows = np.empty_like(flat)
    with open(images.filename, "rb", buffering=0) as handle:
        for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, len(ordered)], strict=True):
            handle.seek(images.offset + int(ordered[lo]) * row_bytes)
            view = memoryview(sorted_rows[lo:hi]).cast("B")
            got = 0
            while got < len(view):
                read = handle.readinto(view[got:])
                if not read:
                    raise OSError(f"{images.filename} ended early")
                got += read
    flat[order] = sorted_rows
    return out


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
        """A writable float32 copy of the images at ``indices``, and their labels. From the
        on-disk cache they are read with plain reads, not through its memory map, so a process
        that reads a million images does not keep them resident."""
        indices = np.asarray(indices, np.int64)
        if isinstance(self.images, np.memmap) and self.images.filename:
            return _read_rows(self.images, indices), np.array(self.labels[indices])
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
