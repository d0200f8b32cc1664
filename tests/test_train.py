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


@pytest.mark.parametrize("mode, train, seen, evals", [
    # (mode, extra config, examples in the updates per example, gradient passes per example)
    ("n_fgsm", {}, 1, 2),  # adversarial examples alone, one input gradient each
    ("pgd_at", {"adv_steps": 3}, 1, 4),  # K input gradients, one update
    ("pgd_at", {"adv_steps": 3, "adv_weight": 0.7}, 2, 5),  # a clean half in the update too
    ("trades", {"adv_steps": 2, "trades_beta": 3.0}, 2, 4),  # clean and adversarial terms, K gradients
])
def test_robust_modes_account_for_their_passes(data, mode, train, seen, evals):
    x, y, xt, yt = data
    model = build_model("tiny_cnn", 7, 32, weights="random", seed=0).model
    result = train_model(model, x, y, TrainConfig(epochs=2, mode=mode, adv_eps=0.03, **train), xt, yt)
    assert result.examples_seen == 2 * seen * len(x)
    assert result.gradient_evals == 2 * evals * len(x)
    assert np.isfinite(result.history["loss"]).all()


def test_the_robust_check_records_pgd_accuracy_and_keeps_the_best_epoch(data):
    from ferqueue.train import _robust_accuracy

    x, y, xt, yt = data
    model = build_model("tiny_cnn", 7, 32, weights="random", seed=0).model
    config = TrainConfig(epochs=4, mode="online_fgsm_rs", adv_eps=0.03, lr=3e-3, robust_check=40,
                         keep_best_robust=True)
    result = train_model(model, x, y, config, xt, yt)
    robust = result.history["val_pgd_accuracy"]
    assert len(robust) == len(result.history["catastrophic_overfitting"]) == 4
    kept = result.extra["kept_epoch"]
    assert robust[kept - 1] == max(robust) and kept == robust.index(max(robust)) + 1
    # the model ends with the kept epoch's weights: its check scores what that epoch scored
    assert _robust_accuracy(model, (xt[:40], yt[:40]), config) == robust[kept - 1]
    assert result.extra["kept_val_accuracy"] == result.history["val_accuracy"][kept - 1]
    assert result.extra["robust_check"]["examples"] == 40
    assert result.gradient_evals == 4 * 3 * len(x), "the check is evaluation, not training compute"


def test_same_command_same_seed_identical_weights_and_metrics(data):
    x, y, xt, yt = data
    runs = []
    for _ in range(2):
        model = build_model("tiny_cnn", 7, 32, weights="random", seed=5).model
        config = TrainConfig(epochs=2, batch_size=16, mode="pgd_at", adv_steps=2, adv_eps=0.03, seed=5, shift=0.1,
                             robust_check=24)
        result = train_model(model, x[:96], y[:96], config, xt, yt)
        runs.append((model.get_weights(), result.history))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    keep = ("loss", "accuracy", "val_loss", "val_accuracy", "val_pgd_accuracy")
    assert {k: runs[0][1][k] for k in keep} == {k: runs[1][1][k] for k in keep}


@pytest.mark.parametrize("bad, message", [
    ({"mode": "trades", "adv_weight": 0.5}, "TRADES weighs its terms with beta"),
    ({"mode": "standard", "adv_weight": 0.5}, "not standard"),
    ({"mode": "pgd_at", "adv_weight": 0.0}, "must be in \\(0, 1\\]"),
    ({"mode": "pgd_at", "adv_weight": 1.5}, "must be in \\(0, 1\\]"),
    ({"mode": "pgd_at", "adv_steps": 0}, "between 1 and 1000"),
    ({"mode": "trades", "trades_beta": 0.0}, "beta"),
    ({"keep_best_robust": True}, "needs a robust check"),
    ({"robust_check": -1}, "must not be negative"),
])
def test_robust_training_options_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**bad)
