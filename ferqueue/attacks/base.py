"""The Attack base class, its result type and the parameter checks every attack shares.

This module imports no TensorFlow: attacks can be configured, validated and keyed in
processes that never run a model (the CLI, the Celery main process).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ferqueue.errors import ConfigError, DataError

Progress = Callable[[int, int], None]
SAFE_KEY = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass
class AttackResult:
    """Adversarial images of one batch plus the per-image facts needed to store and score them."""

    attack: str
    params: dict
    x_adv: np.ndarray
    labels: np.ndarray
    target: np.ndarray | None
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    clean_conf: np.ndarray
    adv_conf: np.ndarray
    success: np.ndarray
    queries: np.ndarray
    linf: np.ndarray
    l0: np.ndarray
    seconds: float  # the whole call: generating x_adv, then scoring clean and adversarial images
    # producing x_adv alone (what ART's ``generate`` times); None where not measured
    generation_seconds: float | None = None

    def summary(self) -> dict:
        """Aggregate metrics; means over an empty selection are NaN."""
        n = len(self.labels)
        correct = self.clean_pred == self.labels
        # untargeted success only means something where the clean image was right
        attacked = self.success if self.target is not None else self.success[correct]
        return {
            "n": n,
            "robust_accuracy": _mean(self.adv_pred == self.labels),
            "clean_accuracy": _mean(correct),
            "success_rate": _mean(attacked),
            "mean_adv_confidence": _mean(self.adv_conf),
            "mean_queries": _mean(self.queries),
            "mean_linf": _mean(self.linf),
            "mean_l0": _mean(self.l0),
            "seconds": float(self.seconds),
            "images_per_second": _rate(n, self.seconds),
            "generation_seconds": None if self.generation_seconds is None else float(self.generation_seconds),
            "generation_images_per_second": _rate(n, self.generation_seconds),
        }


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _rate(n: int, seconds: float | None) -> float | None:
    if seconds is None:
        return None
    return n / seconds if seconds > 0 else 0.0


class Attack:
    """An attack configured once and applied to batches: ``attack(model, x, y)``.

    Subclasses validate their parameters in ``__init__`` into ``self._params`` (JSON-able,
    defaults resolved), name the non-default ones in ``_key_parts`` and implement
    ``_generate``.
    """

    name: ClassVar[str]
    # images per forward pass on an accelerator; on a CPU the engine's smaller CPU_BATCH_SIZE
    default_batch_size: ClassVar[int] = 128
    _params: dict

    @property
    def params(self) -> dict:
        return dict(self._params)

    @property
    def key(self) -> str:
        """Canonical, filename-safe name of this configuration (equal params, equal key)."""
        return "-".join([self.name, *self._key_parts()])

    @property
    def spec(self) -> str:
        """A ``parse_attack`` spec that rebuilds this configuration exactly."""
        items = ",".join(f"{k}={_format(v)}" for k, v in self._params.items() if v is not None)
        return f"{self.name}:{items}"

    def _key_parts(self) -> list[str]:
        raise NotImplementedError

    def check_image_size(self, image_size: int) -> None:
        """Refuse to be planned on images of this size when the attack cannot run on them."""

    @property
    def passes_per_image(self) -> int:
        """Model passes (forward, or forward and backward) per image at most: what a shard of
        this attack costs against another's, to plan the dearest first."""
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params.items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attack) and (self.name, self._params) == (other.name, other._params)

    def __hash__(self) -> int:
        return hash(self.key)

    def __call__(
        self,
        model,
        x: np.ndarray,
        y: np.ndarray,
        *,
        target: np.ndarray | None = None,
        batch_size: int | None = None,
        progress: Progress | None = None,
        ids: np.ndarray | None = None,
    ) -> AttackResult:
        """Attack images ``x`` (N, H, W, 3) in [0, 1] with true labels ``y`` (N,).

        ``target`` makes the attack targeted; ``batch_size`` is images per forward pass
        (default: ``default_batch_size`` on an accelerator, the engine's CPU_BATCH_SIZE on a
        CPU); ``progress(done, total)`` is called as images are finished. ``ids`` names each
        image (its index in the dataset; default 0..N-1): an attack's random draws for an image
        depend only on its seed and the image's id, so an image is attacked the same way in any
        shard, batch or company.

        ``seconds`` in the result covers the whole call; ``generation_seconds`` only the
        making of x_adv, not the forward passes that score clean and adversarial images.
        """
        from ferqueue.models.engine import compiled  # TensorFlow only when an attack runs

        fns = compiled(model)
        x, y, target = _check_batch(x, y, target, fns.image_shape, fns.num_classes)
        if batch_size is None:
            batch_size = fns.default_batch_size(self.default_batch_size)
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch size {batch_size!r} must be a positive integer")
        start = time.perf_counter()
        ids = np.arange(len(x)) if ids is None else np.asarray(ids, np.int64)
        if ids.shape != (len(x),):
            raise DataError(f"ids must name each of the {len(x)} images, got an array of shape {ids.shape}")
        x_adv, queries, clean_probs = self._generate(
            fns, x, y, target, batch_size, progress or (lambda done, total: None), ids
        )
        generated = time.perf_counter()
        if clean_probs is None:
            clean_probs = fns.predict(x, batch_size)
        adv_probs = fns.predict(x_adv, batch_size)
        timing = (time.perf_counter() - start, generated - start)
        return _result(self, x, x_adv, y, target, clean_probs, adv_probs, queries, timing)

    def _generate(self, fns, x, y, target, batch_size, progress, ids):
        """Return (x_adv, queries per image, clean probabilities or None if not computed)."""
        raise NotImplementedError


def _result(attack, x, x_adv, y, target, clean_probs, adv_probs, queries, timing) -> AttackResult:
    rows = np.arange(len(y))
    clean_pred = np.argmax(clean_probs, axis=1).astype(np.int64)
    adv_pred = np.argmax(adv_probs, axis=1).astype(np.int64)
    diff = np.abs(x_adv - x)
    success = adv_pred == target if target is not None else adv_pred != y
    return AttackResult(
        attack=attack.name,
        params=attack.params,
        x_adv=x_adv,
        labels=y,
        target=target,
        clean_pred=clean_pred,
        adv_pred=adv_pred,
        clean_conf=clean_probs[rows, clean_pred].astype(np.float32),
        adv_conf=adv_probs[rows, adv_pred].astype(np.float32),
        success=success,
        queries=np.asarray(queries, dtype=np.int64),
        linf=diff.max(axis=(1, 2, 3), initial=0.0).astype(np.float32),
        l0=np.count_nonzero(diff.max(axis=3, initial=0.0), axis=(1, 2)).astype(np.int64),
        seconds=timing[0],
        generation_seconds=timing[1],
    )


def _check_batch(x, y, target, image_shape: tuple, num_classes: int):
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != image_shape:
        raise DataError(
            f"images have shape {x.shape}; the model takes (N, {', '.join(map(str, image_shape))})"
        )
    if x.size and not (np.isfinite(x).all() and x.min() >= 0.0 and x.max() <= 1.0):
        raise DataError(f"image values must lie in [0, 1], got min {np.nanmin(x)} and max {np.nanmax(x)}")
    y = _check_labels("labels", y, len(x), num_classes)
    if target is not None:
        target = _check_labels("target", target, len(x), num_classes)
        same = np.flatnonzero(target == y)
        if same.size:
            i = int(same[0])
            raise ConfigError(
                f"target equals the true label {y[i]} at index {i}; a targeted attack needs another class"
            )
    return x, y, target


def _check_labels(what: str, values, n: int, num_classes: int) -> np.ndarray:
    values = np.asarray(values)
    if values.shape != (n,) or not (values.dtype.kind in "iu" or values.size == 0):
        raise DataError(
            f"{what} must be {n} integer class indices, got an array of {values.dtype} {values.shape}"
        )
    values = values.astype(np.int64)
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if bad.size:
        raise DataError(f"{what} {values[bad[0]]} at index {bad[0]} is outside 0..{num_classes - 1}")
    return values


# Parameter checks: each raises ConfigError naming the offending value.


def example_rng(seed: int, example_id) -> np.random.Generator:
    """The random draws of one image under one attack seed, whatever else is attacked with it."""
    return np.random.default_rng([seed, int(example_id)])


def check_eps(value) -> float:
    number = check_number("epsilon", value)
    if not 0.0 < number <= 1.0:
        raise ConfigError(f"epsilon {value} is outside (0, 1]")
    return number


def check_number(name: str, value, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} {value} is not a finite number")
    if positive and number <= 0.0:
        raise ConfigError(f"{name} {value} must be a positive number")
    return number


def check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} {value!r} must be an integer >= {minimum}")
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} {value!r} must be true or false")
    return bool(value)


def derived(value: float) -> float:
    """A default computed from other parameters, rounded so keys and params stay readable."""
    return float(f"{value:.12g}")


def number_text(value: float | int) -> str:
    """Shortest text that reads back as the same number (repr), for keys and specs."""
    return repr(value) if isinstance(value, float) else str(value)


def _format(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return number_text(value) if isinstance(value, (int, float)) else str(value)
