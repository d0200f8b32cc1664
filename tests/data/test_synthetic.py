"""Synthetic faces: deterministic, balanced, subject-structured, and learnable but not trivially."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from ferqueue.data import load_dataset, make_split
from ferqueue.data.synthetic import SYNTHETIC_CLASSES, synthetic_face


@pytest.fixture(scope="module")
def faces700():
    start = time.perf_counter()
    ds = load_dataset("synthetic", 32)  # the default size, 700
    return ds, time.perf_counter() - start


def test_default_size_and_identity(faces700):
    ds, _ = faces700
    assert len(ds) == 700
    assert ds.name == "synthetic" and ds.source == "synthetic:700"
    assert (
        ds.class_names
        == SYNTHETIC_CLASSES
        == ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
    )
    assert ds.ids[:2] == ("synthetic:0", "synthetic:1")
    assert ds.subsets is None


def test_loads_fast_and_is_well_formed(faces700):
    ds, seconds = faces700
    assert seconds < 5.0
    assert ds.images.shape == (700, 32, 32, 3) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert np.bincount(ds.labels).tolist() == [100] * 7


def test_each_example_is_a_pure_function_of_its_index(faces700):
    ds, _ = faces700
    image, label, subject = synthetic_face(123, 32)
    np.testing.assert_array_equal(image, ds.images[123])
    assert label == ds.labels[123] and subject == ds.subjects[123]
    small = load_dataset("synthetic:20", 32)
    np.testing.assert_array_equal(small.images, ds.images[:20])  # independent of N
    assert small.fingerprint != ds.fingerprint
    assert load_dataset("synthetic:700", 32).fingerprint == ds.fingerprint


def test_examples_differ(faces700):
    ds, _ = faces700
    flat = ds.images.reshape(len(ds), -1)
    assert len(np.unique(flat, axis=0)) == len(ds)


@pytest.mark.parametrize(("n", "expected_subjects"), [(7, 7), (35, 7), (140, 14), (700, 70)])
def test_subject_pool(faces700, n, expected_subjects):
    ds = faces700[0] if n == 700 else load_dataset(f"synthetic:{n}", 8)
    assert all(re.fullmatch(r"S\d{3}", s) for s in ds.subjects)
    assert len(set(ds.subjects.tolist())) == expected_subjects
    counts = np.bincount(ds.labels)
    assert counts.max() - counts.min() <= 1


def test_every_subject_shows_every_expression(faces700):
    ds, _ = faces700
    for subject in set(ds.subjects.tolist()):
        assert set(ds.labels[ds.subjects == subject].tolist()) == set(range(7))


def test_subjects_look_different(faces700):
    """A subject has its own face: faces of one expression vary more across subjects than within."""
    ds, _ = faces700
    gray = ds.images.mean(axis=3)
    happy = ds.labels == SYNTHETIC_CLASSES.index("happy")
    per_subject = {s: gray[happy & (ds.subjects == s)].mean(axis=0) for s in sorted(set(ds.subjects[happy]))}
    means = np.array(list(per_subject.values()))
    assert means.mean(axis=(1, 2)).std() > 0.03  # skin tones differ


def test_no_single_pixel_separates_the_classes(faces700):
    """The best one-pixel classifier (16 quantile bins, majority label per bin) stays far from 100%."""
    ds, _ = faces700
    x = ds.images.mean(axis=3).reshape(len(ds), -1)
    best = 0.0
    for column in x.T:
        bins = np.digitize(column, np.quantile(column, np.linspace(0, 1, 17)[1:-1]))
        correct = sum(np.bincount(ds.labels[bins == b]).max() for b in np.unique(bins))
        best = max(best, correct / len(ds))
    assert best < 0.5


def test_a_tiny_cnn_learns_the_expressions(faces700):
    """Held-out (unseen subjects) accuracy of the tiny CNN after a dozen short epochs."""
    import keras

    from ferqueue.models import build_model

    ds, _ = faces700
    split = make_split(ds, "subject", seed=0)
    x_train, y_train = ds.take(split.train)
    x_test, y_test = ds.take(split.test)
    model = build_model("tiny_cnn", 7, 32, weights="random", seed=0).model
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x_train, y_train, epochs=12, batch_size=16, verbose=0)
    accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    assert accuracy > 0.6
