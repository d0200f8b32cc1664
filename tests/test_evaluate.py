"""Metrics come from scikit-learn and agree with a hand count."""

import numpy as np

from ferqueue.evaluate import classification_metrics


def test_metrics_match_a_hand_count():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    m = classification_metrics(y, probs.argmax(1), probs.max(1), ["a", "b", "c"])
    assert m["accuracy"] == 4 / 6
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    # per class precision 1/2, 2/3, 1; recall 1/2, 1, 1/2; equal supports -> weighted = macro
    assert np.isclose(m["precision_macro"], (0.5 + 2 / 3 + 1) / 3)
    assert np.isclose(m["recall_weighted"], (0.5 + 1 + 0.5) / 3)
    assert np.isclose(m["mean_confidence"], 0.8 + 0.2 / 3)
    assert m["report"]["b"]["support"] == 2 and m["n"] == 6


def test_a_class_absent_from_the_test_set_still_has_a_row():
    m = classification_metrics(np.array([0, 0]), np.array([0, 1]), np.array([0.9, 0.8]), ["a", "b", "c"])
    assert len(m["confusion"]) == 3 and m["report"]["c"]["support"] == 0
