"""White-box L-inf gradient-sign attacks: FGSM (Goodfellow et al.; with the random start of
Wong, Rice & Kolter, "Fast is better than free") and PGD (Madry et al.).

Both are the same loop: an optional uniform random start in the eps ball, then ``steps``
signed-gradient steps projected onto the eps ball and [0, 1]. Untargeted attacks ascend the
cross-entropy of the true label; targeted ones descend the cross-entropy of the target.
"""

from __future__ import annotations

import numpy as np

from ferqueue.arrays import batches
from ferqueue.attacks.base import (
    Attack,
    check_bool,
    check_eps,
    check_int,
    check_number,
    derived,
    example_rng,
    number_text,
)
from ferqueue.errors import ConfigError


class _SignGradient(Attack):
    """The shared loop; subclasses say how far and how often to step in ``_schedule``."""

    def _schedule(self) -> tuple[float, float, int, bool]:
        """(eps, step size, number of steps, random start)."""
        raise NotImplementedError

    def _generate(self, fns, x, y, target, batch_size, progress, ids):
        eps, step, steps, random_start = self._schedule()
        labels, direction = (y, 1.0) if target is None else (target, -1.0)
        seed = self._params["seed"]
        x_adv = np.empty_like(x)
        # without a random start the first gradient pass sees the clean image: reuse its output
        clean = None if random_start else np.empty((len(x), fns.num_classes), np.float32)
        for part in batches(len(x), batch_size):
            x0 = fns.hold(x[part])  # converted once; every step reads it and `current` stays a tensor
            current = x0
            if random_start:
                noise = np.stack([example_rng(seed, i).uniform(-eps, eps, x0.shape[1:]) for i in ids[part]])
                noise = noise.astype(np.float32)
                current = fns.hold(np.clip(x[part] + noise, 0.0, 1.0))
            for i in range(steps):
                current, probs = fns.step(current, x0, labels[part], eps, step, direction)
                if i == 0 and clean is not None:
                    clean[part] = probs.numpy()
            x_adv[part] = current.numpy()
            progress(part.stop, len(x))
        return x_adv, np.full(len(x), steps, np.int64), clean


class FGSM(_SignGradient):
    """x_adv = clip(x + eps * sign(grad_x CE(logits, y)), 0, 1); one forward+backward per image.

    ``random_start``: start from x + U(-eps, eps) and take one step of ``alpha`` (default
    1.25 * eps), projected back onto the eps ball. ``seed`` drives that start.
    """

    name = "fgsm"

    def __init__(self, eps: float, random_start: bool = False, alpha: float | None = None, seed: int = 0):
        eps = check_eps(eps)
        random_start = check_bool("random_start", random_start)
        if alpha is not None and not random_start:
            raise ConfigError(f"alpha {alpha!r} is the random-start step size; it needs random_start=true")
        if random_start:
            alpha = derived(1.25 * eps) if alpha is None else check_number("alpha", alpha, positive=True)
        self._params = {
            "eps": eps,
            "random_start": random_start,
            "alpha": alpha,
            "seed": check_int("seed", seed, 0),
        }

    def _schedule(self):
        p = self._params
        return p["eps"], p["alpha"] if p["random_start"] else p["eps"], 1, p["random_start"]

    @property
    def passes_per_image(self) -> int:
        return 2 + 1  # a forward and backward pass, and the adversarial image scored

    def _key_parts(self) -> list[str]:
        p = self._params
        parts = [f"eps{number_text(p['eps'])}"]
        if p["random_start"]:
            parts.append("rs")
            if p["alpha"] != derived(1.25 * p["eps"]):
                parts.append(f"a{number_text(p['alpha'])}")
        return parts + ([f"s{p['seed']}"] if p["seed"] else [])


class PGD(_SignGradient):
    """L-inf projected gradient descent: ``steps`` steps of ``step_size`` (default
    2.5 * eps / steps), from a uniform random start in the eps ball unless disabled."""

    name = "pgd"

    def __init__(
        self,
        eps: float,
        steps: int = 10,
        step_size: float | None = None,
        random_start: bool = True,
        seed: int = 0,
    ):
        eps = check_eps(eps)
        steps = check_int("steps", steps, 1)
        if step_size is None:
            step_size = derived(2.5 * eps / steps)
        self._params = {
            "eps": eps,
            "steps": steps,
            "step_size": check_number("step_size", step_size, positive=True),
            "random_start": check_bool("random_start", random_start),
            "seed": check_int("seed", seed, 0),
        }

    def _schedule(self):
        p = self._params
        return p["eps"], p["step_size"], p["steps"], p["random_start"]

    @property
    def passes_per_image(self) -> int:
        return 2 * self._params["steps"] + 1

    def _key_parts(self) -> list[str]:
        p = self._params
        parts = [f"eps{number_text(p['eps'])}", f"steps{p['steps']}"]
        if p["step_size"] != derived(2.5 * p["eps"] / p["steps"]):
            parts.append(f"ss{number_text(p['step_size'])}")
        if not p["random_start"]:
            parts.append("norand")
        return parts + ([f"s{p['seed']}"] if p["seed"] else [])
