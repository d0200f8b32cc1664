"""The real CK+48 and FER2013 copies beside the repository (../shared/datasets), when present."""

from __future__ import annotations

import numpy as np
import pytest

from ferqueue.data import load_dataset, make_split
from ferqueue.data.emotions import FER2013_CLASSES

from .factories import SHARED_DATASETS

CK48 = SHARED_DATASETS / "ck48"
FER2013 = SHARED_DATASETS / "fer2013"
CK48_COUNTS = {
    "anger": 135,
    "contempt": 54,
    "disgust": 177,
    "fear": 75,
    "happy": 207,
    "sadness": 84,
    "surprise": 249,
}
FER2013_SUBSETS = {"train": 28709, "validation": 3589, "test": 3589}

needs_ck48 = pytest.mark.skipif(not CK48.is_dir(), reason=f"CK+48 not found at {CK48}")
needs_fer2013 = pytest.mark.skipif(not FER2013.is_dir(), reason=f"FER2013 not found at {FER2013}")


@pytest.fixture(scope="module")
def ck48():
    return load_dataset(str(CK48), 48)


@needs_ck48
def test_ck48_counts_and_subjects(ck48):
    info = ck48.describe()
    assert info["num_examples"] == 981
    assert info["class_counts"] == CK48_COUNTS
    # The paper counts the 123 subjects of all of CK+; the 327 emotion-labelled sequences that
    # CK+48 is cut from come from 118 of them.
    assert info["n_subjects"] == 118
    assert ck48.images.shape == (981, 48, 48, 3)
    assert np.all(ck48.images[..., 0] == ck48.images[..., 2])  # grayscale replicated


@needs_ck48
def test_ck48_subject_split_keeps_sequences_together(ck48):
    split = make_split(ck48, "subject", seed=42)
    assert set(ck48.subjects[split.train]).isdisjoint(ck48.subjects[split.test])
    assert 0.12 < len(split.test) / len(ck48) < 0.28


@needs_fer2013
def test_fer2013_manifest_counts_without_decoding():
    # The manifest scan reads and hashes every file but decodes none (the full load is slow).
    from ferqueue.data.loaders import _manifest

    manifest = _manifest(str(FER2013))
    assert manifest.class_names == FER2013_CLASSES
    assert len(manifest.ids) == sum(FER2013_SUBSETS.values()) == 35887
    assert {s: manifest.subsets.count(s) for s in FER2013_SUBSETS} == FER2013_SUBSETS


@needs_fer2013
@pytest.mark.slow
def test_fer2013_full_load_and_cache(tmp_path):
    first = load_dataset(str(FER2013), 48, cache_dir=tmp_path)
    assert first.describe()["subsets"] == dict(sorted(FER2013_SUBSETS.items()))
    second = load_dataset(str(FER2013), 48, cache_dir=tmp_path)
    assert isinstance(second.images, np.memmap)
    assert second.fingerprint == first.fingerprint
    split = make_split(second, "predefined")
    assert (len(split.train), len(split.test)) == (28709, 3589)
