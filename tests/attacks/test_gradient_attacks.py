"""FGSM and PGD against the trained tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from ferqueue.attacks import FGSM, PGD, AttackResult
from ferqueue.models import logits_model
from ferqueue.models.engine import compiled


def gradient_sign(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """sign(grad_x CE(logits, y)), computed eagerly, apart from the attack's compiled graph."""
    images = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = logits_model(model)(images, training=False)
        loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
    return np.sign(tape.gradient(loss, images).numpy())


def assert_fgsm_step(x: np.ndarray, x_adv: np.ndarray, sign: np.ndarray, eps: float) -> None:
    """|x_adv - x| == eps along the gradient sign wherever the gradient is non-zero and
    [0, 1] allows it, clipped to the boundary where it does not, and 0 where the gradient is 0."""
    step = x_adv - x
    free = (sign != 0) & (x + eps * sign >= 0) & (x + eps * sign <= 1)
    assert free.mean() > 0.5
    np.testing.assert_allclose(step[free], eps * sign[free], atol=1e-6)
    clipped = (sign != 0) & ~free
    np.testing.assert_array_equal(x_adv[clipped], np.where(sign[clipped] > 0, 1.0, 0.0))
    np.testing.assert_array_equal(step[sign == 0], 0.0)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0


@pytest.mark.parametrize("eps", [0.01, 0.1])
def test_fgsm_moves_each_value_by_eps_along_the_gradient_sign(trained, eps):
    x, y = trained.x[:64], trained.y[:64]
    result = FGSM(eps)(trained.model, x, y, batch_size=24)  # a short last batch too
    assert_fgsm_step(x, result.x_adv, gradient_sign(trained.model, x, y), eps)
    np.testing.assert_allclose(result.linf, eps, atol=1e-6)
    np.testing.assert_array_equal(result.queries, 1)


def test_fgsm_leaves_values_with_zero_gradient_alone(trained):
    import keras

    # the same trained network, blind to blue: its gradient there is exactly zero
    blind = keras.models.clone_model(trained.model)
    blind.set_weights(trained.model.get_weights())
    kernel, bias = blind.get_layer("conv0").get_weights()
    kernel[:, :, 2, :] = 0.0
    blind.get_layer("conv0").set_weights([kernel, bias])
    x, y = trained.x[:16], trained.y[:16]
    sign = gradient_sign(blind, x, y)
    assert np.all(sign[..., 2] == 0) and np.any(sign[..., :2] != 0)
    result = FGSM(0.05)(blind, x, y)
    assert_fgsm_step(x, result.x_adv, sign, 0.05)
    np.testing.assert_array_equal(result.x_adv[..., 2], x[..., 2])


def test_fgsm_robust_accuracy_falls_as_eps_grows(trained):
    x, y = trained.x[:128], trained.y[:128]
    accuracy = [FGSM(eps)(trained.model, x, y).summary()["robust_accuracy"] for eps in (0.01, 0.03, 0.1)]
    assert accuracy == sorted(accuracy, reverse=True)
    assert accuracy[-1] < accuracy[0] - 0.3, accuracy


def test_fgsm_random_start_stays_in_the_eps_ball(trained):
    x, y = trained.x[:64], trained.y[:64]
    plain = FGSM(0.03)(trained.model, x, y)
    result = FGSM(0.03, random_start=True)(trained.model, x, y)
    assert result.params["alpha"] == 0.0375
    assert np.all(result.linf <= 0.03 + 1e-6)
    assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0
    assert not np.array_equal(result.x_adv, plain.x_adv)
    np.testing.assert_array_equal(result.clean_pred, plain.clean_pred)


def test_pgd_is_at_least_as_strong_as_fgsm_and_stays_in_the_eps_ball(trained):
    x, y = trained.x[:128], trained.y[:128]
    fgsm = FGSM(0.05)(trained.model, x, y)
    pgd = PGD(0.05, steps=10)(trained.model, x, y)
    assert pgd.summary()["robust_accuracy"] <= fgsm.summary()["robust_accuracy"]
    assert np.all(pgd.linf <= 0.05 + 1e-6)
    assert pgd.x_adv.min() >= 0.0 and pgd.x_adv.max() <= 1.0
    np.testing.assert_array_equal(pgd.queries, 10)


def test_targeted_pgd_reaches_its_targets(trained):
    x, y = trained.x[:48], trained.y[:48]
    target = (y + 1) % 4
    result = PGD(0.1, steps=10)(trained.model, x, y, target=target)
    np.testing.assert_array_equal(result.success, result.adv_pred == target)
    assert result.summary()["success_rate"] > 0.5


def test_result_holds_typed_per_image_facts(trained):
    x, y = trained.x[:20], trained.y[:20]
    calls = []
    result = FGSM(0.02)(
        trained.model, x, y, batch_size=8, progress=lambda done, total: calls.append((done, total))
    )
    assert isinstance(result, AttackResult)
    assert result.attack == "fgsm" and result.params == FGSM(0.02).params and result.target is None
    assert result.x_adv.dtype == np.float32 and result.x_adv.shape == x.shape
    for name in ("labels", "clean_pred", "adv_pred", "queries", "l0"):
        assert getattr(result, name).dtype == np.int64 and getattr(result, name).shape == (20,)
    for name in ("clean_conf", "adv_conf", "linf"):
        assert getattr(result, name).dtype == np.float32
    assert result.success.dtype == bool
    np.testing.assert_array_equal(result.clean_pred, y)  # trained.x holds correctly classified images
    probs = trained.model.predict(result.x_adv, verbose=0)
    np.testing.assert_array_equal(result.adv_pred, probs.argmax(axis=1))
    np.testing.assert_allclose(result.adv_conf, probs.max(axis=1), atol=1e-5)
    assert calls == [(8, 20), (16, 20), (20, 20)]
    summary = result.summary()
    assert summary["n"] == 20 and summary["clean_accuracy"] == 1.0
    assert summary["success_rate"] == pytest.approx(1.0 - summary["robust_accuracy"])
    assert summary["mean_l0"] == 32 * 32


def test_compiled_once_per_model_and_reused(trained):
    x, y = trained.x, trained.y
    FGSM(0.01)(trained.model, x[:5], y[:5])
    fns = compiled(trained.model)
    traces = fns._step.experimental_get_tracing_count()
    PGD(0.02, steps=3)(trained.model, x[:37], y[:37], batch_size=16)
    FGSM(0.05, random_start=True)(trained.model, x[:9], y[:9])
    assert compiled(trained.model) is fns
    assert fns._step.experimental_get_tracing_count() == traces == 1


@pytest.mark.parametrize(
    "make", [lambda s: FGSM(0.03, random_start=True, seed=s), lambda s: PGD(0.03, steps=3, seed=s)]
)
def test_a_seed_gives_a_reproducible_random_start(trained, make):
    x, y = trained.x[:20], trained.y[:20]
    first = make(3)(trained.model, x, y)
    again = make(3)(trained.model, x, y, batch_size=7)
    other = make(4)(trained.model, x, y)
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    assert not np.array_equal(first.x_adv, other.x_adv)


def test_the_default_batch_on_a_cpu_is_the_engine_cpu_batch(trained):
    from ferqueue.models.engine import CPU_BATCH_SIZE

    fns = compiled(trained.model)
    expected = FGSM.default_batch_size if fns.on_accelerator else CPU_BATCH_SIZE
    assert fns.default_batch_size(FGSM.default_batch_size) == expected
    x, y = trained.x[: expected + 5], trained.y[: expected + 5]
    calls = []
    FGSM(0.01)(trained.model, x, y, progress=lambda done, total: calls.append(done))
    assert calls == [expected, expected + 5]
