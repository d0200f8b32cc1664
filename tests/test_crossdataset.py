"""Cross-dataset class mapping: by canonical emotion, with nothing silently dropped."""

import numpy as np
import pytest

from ferqueue.errors import ConfigError
from ferqueue.evaluate import map_classes, mapped_subset

CK = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
FER = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def test_fer2013_maps_onto_ck_plus_by_emotion():
    mapping = map_classes(CK, FER)
    assert mapping.pairs() == {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happy",
                               "sad": "sadness", "surprise": "surprise"}
    assert mapping.unmapped_dataset_classes == ["neutral"]
    assert mapping.unmapped_model_classes == ["contempt"]


def test_unmapped_examples_are_counted_not_dropped_silently():
    mapping = map_classes(CK, FER)
    labels = np.array([0, 4, 4, 5, 6])  # angry, neutral, neutral, sad, surprise
    keep, model_labels, record = mapped_subset(mapping, labels)
    np.testing.assert_array_equal(keep, [0, 3, 4])
    np.testing.assert_array_equal(model_labels, [0, 5, 6])
    assert record["dataset_classes_without_counterpart"] == {"neutral": 2}
    assert record["examples_left_out"] == 2 and record["examples_scored"] == 3
    assert record["model_classes_without_counterpart"] == ["contempt"]


def test_disjoint_classes_are_refused():
    with pytest.raises(ConfigError, match="no class"):
        map_classes(CK, ("cat", "dog"))
