"""Training modes share one loop and account for their compute the same way."""

import numpy as np
import pytest

from ferqueue.errors import ConfigError
from ferqueue.models import build_model
from ferqueue.models.engine import forward
from ferqueue.train import TrainConfig, train_model


@pytest.fixture(scope="module")
def data(synthetic_small):
    from ferqueue.data import make_split

    split = make_split(synthetic_small, "random", seed=0)
    return (*synthetic_small.take(split.train), *synthetic_small.take(split.test))


def test_tiny_cnn_learns_synthetic_faces(data):
    x, y, xt, yt = data
    model = build_model("tiny_cnn", 7, 32, weights="random", seed=0).model
    result = train_model(model, x, y, TrainConfig(epochs=20, batch_size=16, lr=3e-3), xt, yt)
    accuracy = float(np.mean(forward(model, xt).argmax(1) == yt))
    assert accuracy > 0.5, f"held-out accuracy {accuracy}"
    assert result.history["val_accuracy"][-1] == pytest.approx(accuracy, abs=1e-6), "eval mode = reported val"
    assert result.examples_seen == 20 * len(x) and result.gradient_evals == 20 * len(x)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_online_fgsm_costs_three_passes_and_sees_twice_the_examples(data):
    x, y, xt, yt = data
    model = build_model("tiny_cnn", 7, 32, weights="random", seed=0).model
    for mode in ("online_fgsm", "online_fgsm_rs"):
        result = train_model(model, x, y, TrainConfig(epochs=2, mode=mode, adv_eps=0.03), xt, yt)
        assert result.examples_seen == 2 * 2 * len(x)  # clean + adversarial copy of every example
        assert result.gradient_evals == 2 * 3 * len(x)  # + one input-gradient pass per example


def test_probe_then_fine_tune_on_a_backbone_model(data):
    x, y, xt, yt = data
    built = build_model("mobilenetv2", 7, 32, weights="random", seed=0)
    config = TrainConfig(epochs=1, probe_epochs=3, batch_size=64)
    result = train_model(built.model, x, y, config, xt, yt)
    assert len(result.history["probe_accuracy"]) == 3 and len(result.history["val_accuracy"]) == 1
    assert result.extra["probe_forward_evals"] == len(x) + len(xt)
    assert result.gradient_evals == len(x)
    assert len(built.model.trainable_weights) == 4, "the backbone is frozen again after training"


def test_same_seed_same_weights(data):
    x, y, _xt, _yt = data
    outs = []
    for _ in range(2):
        model = build_model("tiny_cnn", 7, 32, weights="random", seed=3).model
        train_model(model, x[:64], y[:64], TrainConfig(epochs=1, seed=3))
        outs.append(forward(model, x[:8]))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "adversarial"}, "adversarial"), ({"epochs": -1}, "-1"), ({"lr": 2.0}, "2.0"),
    ({"adv_eps": 0.0}, "0.0"), ({"batch_size": 0}, "0"),
])
def test_bad_config_is_refused_with_the_value(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_mismatched_or_empty_data_is_refused():
    model = build_model("tiny_cnn", 7, 32, weights="random").model
    with pytest.raises(ConfigError, match="3 training images but 2 labels"):
        train_model(model, np.zeros((3, 32, 32, 3), np.float32), np.zeros(2, int), TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="empty"):
        train_model(model, np.zeros((0, 32, 32, 3), np.float32), np.zeros(0, int), TrainConfig(epochs=1))
