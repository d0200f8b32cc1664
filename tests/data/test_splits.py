"""make_split: stratified random, subject-disjoint and predefined splits, and their errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from ferqueue.data import SPLIT_KINDS, load_dataset, make_split
from ferqueue.errors import ConfigError

from .factories import make_dataset


@pytest.fixture(scope="module")
def faces():
    """350 synthetic faces: 7 balanced classes, 35 subjects (labels, subjects and ids are all a split reads)."""
    return load_dataset("synthetic:350", 8)


@pytest.fixture(scope="module")
def unbalanced():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], [200, 100, 50, 30])
    subjects = [f"S{rng.integers(0, 40):03d}" for _ in labels]
    return make_dataset(labels, subjects=subjects, name="unbalanced")


def _is_partition(split, n):
    assert split.train.dtype == np.int64 and split.test.dtype == np.int64
    assert np.all(np.diff(split.train) > 0) and np.all(np.diff(split.test) > 0)  # sorted, unique
    assert len(np.intersect1d(split.train, split.test)) == 0
    assert len(split.train) + len(split.test) == n


def test_kinds():
    assert SPLIT_KINDS == ("random", "subject", "predefined")


def test_random_split_is_the_papers_stratified_split(unbalanced):
    split = make_split(unbalanced, "random", test_fraction=0.2, seed=7)
    _is_partition(split, len(unbalanced))
    _, expected_test = train_test_split(
        np.arange(len(unbalanced)), test_size=0.2, stratify=unbalanced.labels, random_state=7
    )
    np.testing.assert_array_equal(split.test, np.sort(expected_test))
    for label, count in enumerate(np.bincount(unbalanced.labels)):
        in_test = int(np.sum(unbalanced.labels[split.test] == label))
        assert abs(in_test - 0.2 * count) <= 1


def test_random_split_is_deterministic_by_seed(unbalanced):
    a = make_split(unbalanced, "random", seed=1)
    b = make_split(unbalanced, "random", seed=1)
    c = make_split(unbalanced, "random", seed=2)
    np.testing.assert_array_equal(a.test, b.test)
    assert a.fingerprint == b.fingerprint
    assert not np.array_equal(a.test, c.test)
    assert a.fingerprint != c.fingerprint


def test_random_k_fold_partitions_the_data(unbalanced):
    tests = [make_split(unbalanced, "random", n_folds=4, fold=k, seed=3).test for k in range(4)]
    np.testing.assert_array_equal(np.sort(np.concatenate(tests)), np.arange(len(unbalanced)))


def test_subject_split_is_subject_disjoint_and_stratified(faces):
    split = make_split(faces, "subject", test_fraction=0.2, seed=0)
    _is_partition(split, len(faces))
    train_subjects = set(faces.subjects[split.train].tolist())
    test_subjects = set(faces.subjects[split.test].tolist())
    assert train_subjects.isdisjoint(test_subjects)
    assert 0.15 <= len(split.test) / len(faces) <= 0.25
    test_share = np.bincount(faces.labels[split.test], minlength=7) / len(split.test)
    assert np.all(np.abs(test_share - 1 / 7) < 0.05)


def test_subject_split_on_unbalanced_subjects(unbalanced):
    split = make_split(unbalanced, "subject", test_fraction=0.25, seed=5)
    _is_partition(split, len(unbalanced))
    assert set(unbalanced.subjects[split.train]).isdisjoint(unbalanced.subjects[split.test])


def test_subject_split_folds_follow_test_fraction_and_seed(faces):
    # Without n_folds the folds are those of a k-fold with k = round(1 / test_fraction).
    folds = [make_split(faces, "subject", test_fraction=0.25, fold=k, seed=4).test for k in range(4)]
    np.testing.assert_array_equal(np.sort(np.concatenate(folds)), np.arange(len(faces)))
    assert not np.array_equal(
        make_split(faces, "subject", seed=4).test, make_split(faces, "subject", seed=5).test
    )
    np.testing.assert_array_equal(
        make_split(faces, "subject", seed=4).test, make_split(faces, "subject", seed=4).test
    )


def test_subject_k_fold_partitions_data_and_subjects(faces):
    splits = [make_split(faces, "subject", n_folds=5, fold=k, seed=0) for k in range(5)]
    all_test = np.concatenate([s.test for s in splits])
    np.testing.assert_array_equal(np.sort(all_test), np.arange(len(faces)))
    subject_sets = [set(faces.subjects[s.test].tolist()) for s in splits]
    assert sum(len(s) for s in subject_sets) == len(set(faces.subjects.tolist()))  # each subject in one fold
    for s in splits:
        assert set(faces.subjects[s.train].tolist()).isdisjoint(faces.subjects[s.test].tolist())
    assert len({s.fingerprint for s in splits}) == 5


def test_predefined_split_uses_the_datasets_subsets():
    subsets = ["train"] * 6 + ["validation"] * 2 + ["test"] * 3 + ["train"]
    ds = make_dataset([0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1], subsets=subsets)
    split = make_split(ds, "predefined")
    assert split.train.tolist() == [0, 1, 2, 3, 4, 5, 11]
    assert split.test.tolist() == [8, 9, 10]  # validation left out


def test_predefined_split_of_a_fer_folder(fer_folder):
    ds = load_dataset(str(fer_folder), 8)
    split = make_split(ds, "predefined")
    assert set(ds.subsets[split.train]) == {"train"} and len(split.train) == 21
    assert set(ds.subsets[split.test]) == {"test"} and len(split.test) == 14


def test_fingerprint_depends_on_the_dataset_and_kind():
    a = make_dataset([0, 1] * 20, subjects=[f"S{i // 2}" for i in range(40)], name="a")
    b = make_dataset([0, 1] * 20, subjects=[f"S{i // 2}" for i in range(40)], name="b")
    sa, sb = make_split(a, "random"), make_split(b, "random")
    np.testing.assert_array_equal(sa.test, sb.test)
    assert sa.fingerprint != sb.fingerprint
    assert sa.dataset_fingerprint == a.fingerprint


def test_describe_is_json_without_arrays(faces):
    split = make_split(faces, "subject", n_folds=5, fold=2, seed=9)
    info = split.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["kind"] == "subject" and info["seed"] == 9 and info["fold"] == 2 and info["n_folds"] == 5
    assert info["n_train"] + info["n_test"] == len(faces)
    assert info["fingerprint"] == split.fingerprint
    assert "train" not in info and "test" not in info


# --- errors ----------------------------------------------------------------------------------


def test_unknown_kind(faces):
    with pytest.raises(ConfigError, match="'stratified'"):
        make_split(faces, "stratified")


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_test_fraction_outside_open_interval(faces, fraction):
    with pytest.raises(ConfigError, match=str(fraction)):
        make_split(faces, "random", test_fraction=fraction)


@pytest.mark.parametrize(
    ("kind", "n_folds", "fold"),
    [
        ("subject", 5, 5),
        ("subject", 5, -1),
        ("subject", None, 5),
        ("random", 3, 3),
        ("random", None, 1),
    ],
)
def test_fold_outside_range(faces, kind, n_folds, fold):
    with pytest.raises(ConfigError, match=f"fold {fold}"):
        make_split(faces, kind, n_folds=n_folds, fold=fold)


def test_too_few_folds(faces):
    with pytest.raises(ConfigError, match="n_folds=1"):
        make_split(faces, "subject", n_folds=1)


def test_subject_split_without_subjects_names_the_dataset():
    ds = make_dataset([0, 1] * 10, name="nosubjects")
    with pytest.raises(ConfigError, match="'nosubjects'.*no subject ids"):
        make_split(ds, "subject")


def test_predefined_split_without_subsets_names_the_dataset(faces):
    with pytest.raises(ConfigError, match="'synthetic'.*no predefined"):
        make_split(faces, "predefined")


def test_predefined_split_without_test_examples():
    ds = make_dataset([0, 1, 0, 1], subsets=["train", "train", "validation", "validation"], name="notest")
    with pytest.raises(ConfigError, match="'notest'.*'test'"):
        make_split(ds, "predefined")


def test_class_too_small_for_a_stratified_split():
    ds = make_dataset([0] * 10 + [1], name="tiny")
    with pytest.raises(ConfigError, match="'tiny'"):
        make_split(ds, "random")
