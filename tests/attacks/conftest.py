"""A tiny CNN genuinely trained on drawn oriented bars, shared by every attack test.

The bars are thin, short and low-contrast, so a few pixels carry the class evidence and
few-pixel attacks succeed on some images but not all: DE and random search can be told
apart. Training is seeded, so the model is the same on every run of one machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

SIZE = 32
NUM_CLASSES = 4  # bar orientations 0, 45, 90 and 135 degrees


def oriented_bars(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (SIZE x SIZE, RGB in [0, 1]) of one thin coloured bar on a noisy background;
    the label is the bar's orientation."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % NUM_CLASSES)
    theta = y * np.pi / NUM_CLASSES + rng.uniform(-0.12, 0.12, n)
    centre_r, centre_c = rng.uniform(0.3 * SIZE, 0.7 * SIZE, (2, n))
    half_length = rng.uniform(0.2, 0.35, n) * SIZE / 2
    half_width = rng.uniform(0.8, 1.3, n) / 2
    r, c = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    dr = r[None] - centre_r[:, None, None]
    dc = c[None] - centre_c[:, None, None]
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    on_bar = (np.abs(dc * cos - dr * sin) <= half_length[:, None, None]) & (
        np.abs(dc * sin + dr * cos) <= half_width[:, None, None]
    )
    background = rng.uniform(0.0, 0.4, (n, 1, 1, 3))
    bar = rng.uniform(0.45, 0.8, (n, 1, 1, 3))
    x = np.where(on_bar[..., None], bar, background) + rng.normal(0.0, 0.08, (n, SIZE, SIZE, 3))
    return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64)


@dataclass(frozen=True)
class Trained:
    model: object  # keras.Model, softmax output
    x: np.ndarray  # held-out images the model classifies correctly
    y: np.ndarray
    accuracy: float  # on all held-out images


@pytest.fixture(scope="session")
def trained() -> Trained:
    import keras

    from ferqueue.models import build_model

    x, y = oriented_bars(480, seed=0)
    model = build_model("tiny_cnn", NUM_CLASSES, SIZE, weights="random", seed=0).model
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=14, batch_size=32, verbose=0)
    x_test, y_test = oriented_bars(300, seed=1)
    pred = np.argmax(model.predict(x_test, batch_size=300, verbose=0), axis=1)
    accuracy = float(np.mean(pred == y_test))
    assert accuracy > 0.85, f"the test model reached only {accuracy:.1%} held-out accuracy"
    right = pred == y_test
    return Trained(model=model, x=x_test[right], y=y_test[right], accuracy=accuracy)
