"""The random and differential-evolution pixel attacks against the trained tiny CNN."""

from __future__ import annotations

import numpy as np
import pytest

from ferqueue.attacks import PixelAttack
from ferqueue.errors import ConfigError
from ferqueue.models import logits_model

BUDGET = 600  # queries per image: the random search succeeds on some images, not most


def changed_pixels(x: np.ndarray, x_adv: np.ndarray) -> np.ndarray:
    return np.count_nonzero(np.any(x_adv != x, axis=-1), axis=(1, 2))


@pytest.fixture(scope="module")
def same_budget(trained):
    """Random search and Su et al.'s DE, one pixel, the same query budget, the same 40 images."""
    x, y = trained.x[:40], trained.y[:40]
    random = PixelAttack(k=1, method="random", queries=BUDGET)(trained.model, x, y)
    de = PixelAttack(k=1, method="de", popsize=30, maxiter=BUDGET // 30 - 1)(trained.model, x, y)
    return x, random, de


def test_de_beats_random_search_at_the_same_budget(same_budget):
    _, random, de = same_budget
    random_rate, de_rate = random.summary()["success_rate"], de.summary()["success_rate"]
    assert 0.0 < random_rate < 0.6, "the random search should be neither hopeless nor saturated"
    assert de_rate > random_rate
    assert de.queries.max() <= BUDGET and random.queries.max() <= BUDGET


def test_early_stop_spends_fewer_queries_on_images_that_fall_early(same_budget):
    _, random, de = same_budget
    np.testing.assert_array_equal(random.queries[~random.success], BUDGET)
    assert np.all(random.queries[random.success] <= BUDGET)
    assert random.queries[random.success].mean() < BUDGET / 2
    np.testing.assert_array_equal(de.queries[~de.success], BUDGET)
    assert np.all(de.queries[de.success] <= BUDGET)
    assert de.queries[de.success].mean() < BUDGET / 2


def test_de_stops_inside_a_population_at_the_first_success(trained):
    """Images that fall to one of the initial candidates spend fewer queries than a
    population, counted as a one-at-a-time evaluation would count them."""
    x, y = trained.x[:40], trained.y[:40]
    result = PixelAttack(k=3, method="de", popsize=200, maxiter=0)(trained.model, x, y)
    fell = result.success
    assert fell.any() and (~fell).any()
    np.testing.assert_array_equal(result.queries[~fell], 200)
    assert np.all((result.queries[fell] >= 1) & (result.queries[fell] <= 200))
    assert result.queries[fell].min() < 200


def margin(model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The true class's logit minus the largest other one: the fitness the searches minimise."""
    z = logits_model(model)(x, training=False).numpy()
    rows = np.arange(len(y))
    true = z[rows, y]
    z[rows, y] = -np.inf
    return true - z.max(axis=1)


def test_failed_searches_return_a_candidate_that_lowered_the_margin(trained, same_budget):
    x, random, de = same_budget
    clean = margin(trained.model, x, random.labels)
    for result in (random, de):
        failed = ~result.success
        assert failed.any()
        lowered = clean[failed] - margin(trained.model, result.x_adv[failed], result.labels[failed])
        assert np.all(lowered >= -1e-4) and lowered.mean() > 0.1


def test_de_lowers_the_margin_more_than_random_search_at_the_same_budget(trained, same_budget):
    _, random, de = same_budget
    both_failed = ~random.success & ~de.success
    assert both_failed.any()
    de_margin = margin(trained.model, de.x_adv[both_failed], de.labels[both_failed])
    random_margin = margin(trained.model, random.x_adv[both_failed], random.labels[both_failed])
    assert de_margin.mean() < random_margin.mean()


def test_one_pixel_results_change_exactly_one_pixel(same_budget):
    x, random, de = same_budget
    for result in (random, de):
        np.testing.assert_array_equal(changed_pixels(x, result.x_adv), 1)
        np.testing.assert_array_equal(result.l0, 1)
        assert result.x_adv.min() >= 0.0 and result.x_adv.max() <= 1.0


@pytest.mark.parametrize("method", ["random", "de"])
@pytest.mark.parametrize("k", [1, 3])
def test_exactly_k_pixels_change(trained, method, k):
    budget = {"queries": 40} if method == "random" else {"popsize": 10, "maxiter": 3}
    x, y = trained.x[:12], trained.y[:12]
    result = PixelAttack(k=k, method=method, **budget)(trained.model, x, y)
    np.testing.assert_array_equal(changed_pixels(x, result.x_adv), k)
    np.testing.assert_array_equal(result.l0, k)


@pytest.mark.parametrize("method", ["random", "de"])
def test_exactly_k_pixels_change_on_saturated_images(trained, method):
    # black and white images: clipped candidate colours often equal the original pixel
    x = np.zeros((6, 32, 32, 3), np.float32)
    x[3:] = 1.0
    x[1, :, :16] = 1.0
    y = np.argmax(trained.model.predict(x, verbose=0), axis=1)
    budget = {"queries": 30} if method == "random" else {"popsize": 8, "maxiter": 3}
    result = PixelAttack(k=3, method=method, **budget)(trained.model, x, y)
    np.testing.assert_array_equal(changed_pixels(x, result.x_adv), 3)


def test_targeted_success_means_reaching_the_target(trained):
    x, y = trained.x[:24], trained.y[:24]
    target = (y + 1) % 4
    result = PixelAttack(k=3, method="de", popsize=30, maxiter=10)(trained.model, x, y, target=target)
    assert result.success.any()
    np.testing.assert_array_equal(result.success, result.adv_pred == target)
    np.testing.assert_array_equal(result.target, target)
    assert result.summary()["success_rate"] == pytest.approx(result.success.mean())


@pytest.mark.parametrize("method", ["random", "de"])
def test_a_seed_gives_a_reproducible_result(trained, method):
    budget = {"queries": 50} if method == "random" else {"popsize": 10, "maxiter": 4}
    x, y = trained.x[:10], trained.y[:10]
    first = PixelAttack(k=2, method=method, seed=7, **budget)(trained.model, x, y)
    again = PixelAttack(k=2, method=method, seed=7, **budget)(trained.model, x, y, batch_size=33)
    other = PixelAttack(k=2, method=method, seed=8, **budget)(trained.model, x, y)
    np.testing.assert_array_equal(first.x_adv, again.x_adv)
    np.testing.assert_array_equal(first.queries, again.queries)
    assert not np.array_equal(first.x_adv, other.x_adv)


def test_progress_reaches_the_total(trained):
    calls = []
    PixelAttack(queries=20)(
        trained.model, trained.x[:7], trained.y[:7], progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (7, 7)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_more_pixels_than_the_image_has_is_refused(trained):
    with pytest.raises(ConfigError, match="k 1025 exceeds the 1024 pixels"):
        PixelAttack(k=1025)(trained.model, trained.x[:2], trained.y[:2])
