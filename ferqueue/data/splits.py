"""Train/test splits: the paper's stratified random split, subject-disjoint folds, predefined subsets.

A random split of CK+ puts near-duplicate frames of one sequence on both sides, so the
subject-disjoint split is the honest one; "random" is kept to reproduce the paper.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ferqueue.data.dataset import Dataset
from ferqueue.errors import ConfigError
from ferqueue.vocabulary import SUBSETS

SPLIT_KINDS = ("random", "subject", "predefined")


# eq=False: index arrays do not compare as a bool; compare fingerprints instead.
@dataclass(frozen=True, eq=False)
class Split:
    kind: str
    seed: int
    test_fraction: float
    fold: int
    n_folds: int | None
    train: np.ndarray  # int64 sorted indices into the dataset
    test: np.ndarray
    fingerprint: str  # sha256 over kind, the dataset fingerprint and the index arrays
    dataset_fingerprint: str

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "seed": self.seed,
            "test_fraction": self.test_fraction,
            "fold": self.fold,
            "n_folds": self.n_folds,
            "n_train": int(len(self.train)),
            "n_test": int(len(self.test)),
            "fingerprint": self.fingerprint,
            "dataset_fingerprint": self.dataset_fingerprint,
        }

    def subset(self, name: str) -> np.ndarray:
        """The indices of the ``train`` or ``test`` side."""
        if name not in SUBSETS:
            raise ConfigError(f"unknown subset {name!r}; choose {' or '.join(SUBSETS)}")
        return self.train if name == "train" else self.test


def make_split(
    dataset: Dataset,
    kind: str = "random",
    *,
    test_fraction: float = 0.2,
    seed: int = 42,
    n_folds: int | None = None,
    fold: int = 0,
) -> Split:
    """Split ``dataset`` into train and test indices. With ``n_folds``, fold ``fold`` of a
    (stratified, for "subject" also subject-grouped) k-fold is the test set."""
    if kind not in SPLIT_KINDS:
        raise ConfigError(f"unknown split kind {kind!r}; choose one of {', '.join(SPLIT_KINDS)}")
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    if n_folds is not None and (kind == "predefined" or n_folds < 2):
        raise ConfigError(f"n_folds={n_folds!r} is invalid for a {kind} split (needs an integer >= 2)")
    if kind == "subject" and dataset.subjects is None:
        raise ConfigError(
            f"dataset {dataset.name!r} ({dataset.source}) has no subject ids: use a random split"
        )
    if kind == "predefined" and dataset.subsets is None:
        raise ConfigError(f"dataset {dataset.name!r} ({dataset.source}) has no predefined train/test subsets")

    # The subject split without n_folds is k-fold with k = 1/test_fraction, as scikit-learn does it.
    folds = n_folds if n_folds is not None else (round(1 / test_fraction) if kind == "subject" else None)
    if folds is not None and folds < 2:
        raise ConfigError(f"test_fraction {test_fraction} is too large for a subject split (needs <= 0.5)")
    if not 0 <= fold < (folds or 1):
        allowed = f"[0, {folds})" if folds else "0 (no folds for this split)"
        raise ConfigError(f"fold {fold!r} is outside {allowed}")

    # Imported here: scikit-learn takes seconds to import and most ferqueue commands never split.
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

    labels = dataset.labels
    indices = np.arange(len(labels))
    try:
        if kind == "predefined":
            train, test = _subset(dataset, "train"), _subset(dataset, "test")
        elif kind == "subject":
            splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
            train, test = list(splitter.split(indices, labels, groups=dataset.subjects))[fold]
        elif folds is not None:
            splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            train, test = list(splitter.split(indices, labels))[fold]
        else:
            train, test = train_test_split(
                indices, test_size=test_fraction, stratify=labels, random_state=seed
            )
    except ValueError as exc:  # e.g. a class or subject count too small for the requested split
        raise ConfigError(f"cannot make a {kind} split of dataset {dataset.name!r}: {exc}") from None

    train, test = np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
    h = hashlib.sha256(f"ferqueue-split-v1\n{kind}\n{dataset.fingerprint}\n".encode())
    h.update(train.tobytes())
    h.update(b"|")
    h.update(test.tobytes())
    return Split(
        kind=kind,
        seed=seed,
        test_fraction=test_fraction,
        fold=fold,
        n_folds=n_folds,
        train=train,
        test=test,
        fingerprint=h.hexdigest(),
        dataset_fingerprint=dataset.fingerprint,
    )


def _subset(dataset: Dataset, subset: str) -> np.ndarray:
    found = np.flatnonzero(dataset.subsets == subset)
    if len(found) == 0:
        raise ConfigError(f"dataset {dataset.name!r} ({dataset.source}) has no {subset!r} examples")
    return found
