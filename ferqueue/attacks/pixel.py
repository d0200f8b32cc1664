"""Few-pixel black-box attacks: the paper's random one-pixel search and the differential
evolution of Su, Vargas & Sakurai, "One pixel attack for fooling deep neural networks" (2019).

A candidate changes k pixels; its genes have shape (k, 5): row, column and the new RGB
colour in [0, 1] of each pixel. Every candidate is made legal before it is evaluated
(integer in-image positions, k distinct ones, colours that differ from the original
pixel), so every returned image differs from its source in exactly k pixels.

Fitness is the logit margin of Carlini & Wagner: the true class's logit minus the largest
other one (minimised; negative means misclassified), or for a target the largest other
logit minus the target's. Su et al. minimise the true class's probability instead, but a
confident model's float32 softmax sits at 1 - 6e-8 for almost every candidate, which
leaves the search nothing to follow; the margin keeps its signal at any confidence.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ferqueue.arrays import batches
from ferqueue.attacks.base import Attack, check_int, example_rng
from ferqueue.errors import ConfigError

METHODS = ("random", "de")
DEFAULTS = {"queries": 100, "popsize": 400, "maxiter": 100}
_F = 0.5  # Su et al.'s DE/rand/1 scale factor (no crossover)
_COLOUR_SD = 127 / 255  # Su et al.'s initial colours: N(128, 127) on 0..255, clipped
_GROUP = 1024  # images attacked together: bounds population and candidate memory
_FIRST_ROUND, _MAX_ROUND = 8, 512  # candidates per image per round, doubling (random search: capped)


class PixelAttack(Attack):
    """Change exactly ``k`` pixels per image.

    ``method="random"``: random search over positions and uniform colours with a budget of
    ``queries`` candidates per image (default 100), stopping at the first success.
    ``method="de"``: DE/rand/1 with F=0.5 and no crossover over ``popsize`` candidates
    (default 400) for up to ``maxiter`` generations (default 100), stopping once any
    candidate succeeds: at most popsize queries initially and popsize per generation.

    Both evaluate an image's candidates in order, in rounds of doubling size batched over
    all images, and count queries as a one-at-a-time search would: up to and including the
    first success. An image that falls early spends tens of queries, not a population.
    """

    name = "pixel"
    default_batch_size = 2048  # candidates per forward pass on an accelerator; no gradients are kept

    def __init__(
        self,
        k: int = 1,
        method: str = "random",
        queries: int | None = None,
        popsize: int | None = None,
        maxiter: int | None = None,
        seed: int = 0,
    ):
        if method not in METHODS:
            raise ConfigError(f"pixel method {method!r} is unknown; choose one of {', '.join(METHODS)}")
        own = ("queries",) if method == "random" else ("popsize", "maxiter")
        given = {"queries": queries, "popsize": popsize, "maxiter": maxiter}
        for name, value in given.items():
            if value is not None and name not in own:
                raise ConfigError(f"{name} {value!r} does not apply to pixel method {method!r}")
        minimum = {"queries": 1, "popsize": 4, "maxiter": 0}  # DE/rand/1 needs 3 donors besides the parent
        self._params = {"k": check_int("k", k, 1), "method": method}
        for name in own:
            value = DEFAULTS[name] if given[name] is None else given[name]
            self._params[name] = check_int(name, value, minimum[name])
        self._params["seed"] = check_int("seed", seed, 0)

    def _key_parts(self) -> list[str]:
        p = self._params
        if p["method"] == "random":
            parts = [p["method"], f"k{p['k']}", f"q{p['queries']}"]
        else:
            parts = [p["method"], f"k{p['k']}", f"p{p['popsize']}", f"g{p['maxiter']}"]
        return parts + ([f"s{p['seed']}"] if p["seed"] else [])

    @property
    def passes_per_image(self) -> int:
        p = self._params
        queries = p["queries"] if p["method"] == "random" else p["popsize"] * (p["maxiter"] + 1)
        return queries + 2  # the candidates (forward passes), the clean and the adversarial image

    def check_image_size(self, image_size: int) -> None:
        if self._params["k"] > image_size * image_size:
            raise ConfigError(f"k {self._params['k']} exceeds the {image_size * image_size} pixels of a "
                              f"{image_size}x{image_size} image")

    def _generate(self, fns, x, y, target, batch_size, progress, ids):
        n, h, w = x.shape[:3]
        k = self._params["k"]
        if k > h * w:
            raise ConfigError(f"k {k} exceeds the {h * w} pixels of a {h}x{w} image")
        seed = self._params["seed"]
        goal = y if target is None else target
        search = self._random_search if self._params["method"] == "random" else self._evolve
        genes = np.empty((n, k, 5), np.float32)
        queries = np.zeros(n, np.int64)
        for part in batches(n, _GROUP):
            rngs = [example_rng(seed, i) for i in ids[part]]
            group = _Group(fns, x[part], goal[part], target is not None, k, batch_size, rngs)
            queries[part] = search(group, lambda done, start=part.start: progress(start + done, n))
            genes[part] = group.best_genes
        x_adv = x.copy()
        rows, cols = genes[..., 0].astype(np.int64), genes[..., 1].astype(np.int64)
        x_adv[np.arange(n)[:, None], rows, cols] = genes[..., 2:]
        return x_adv, queries, None

    def _random_search(self, group: _Group, report: Callable[[int], None]) -> np.ndarray:
        """Draw and evaluate candidates in rounds of doubling size until the budget is spent
        or the image falls."""
        budget = self._params["queries"]
        queries = np.zeros(group.size, np.int64)
        active = np.arange(group.size)
        spent, size = 0, _FIRST_ROUND
        while active.size and spent < budget:
            r = min(size, _MAX_ROUND, budget - spent)
            genes = group.legalise(active, group.draw(active, r, su_colours=False))
            _, hit = group.evaluate_round(active, genes, queries)
            spent, size = spent + r, size * 2
            active = active[~hit]
            report(group.size - active.size)
        report(group.size)
        return queries

    def _evolve(self, group: _Group, report: Callable[[int], None]) -> np.ndarray:
        """Su et al.'s DE: each child competes only with its parent; an image leaves the
        search at its first successful candidate, in the initial population or later."""
        size = self._params["popsize"]
        everyone = np.arange(group.size)
        queries = np.zeros(group.size, np.int64)
        population = group.legalise(everyone, group.draw(everyone, size, su_colours=True))
        fitness, active = _evaluate_population(group, everyone, population, queries)
        report(group.size - active.size)
        for _ in range(self._params["maxiter"]):
            if not active.size:
                break
            parents = population[active]
            base, plus, minus = _donors([group.rngs[i] for i in active], size)
            row = np.arange(active.size)[:, None]
            mutants = parents[row, base] + _F * (parents[row, plus] - parents[row, minus])
            children = group.legalise(active, mutants)
            child_fitness, left = _evaluate_population(group, active, children, queries)
            rows = np.searchsorted(active, left)  # the images still searching; all their children ran
            better = child_fitness[rows] <= fitness[left]
            population[left] = np.where(better[..., None, None], children[rows], parents[rows])
            fitness[left] = np.where(better, child_fitness[rows], fitness[left])
            active = left
            report(group.size - active.size)
        report(group.size)
        return queries


def _evaluate_population(group: _Group, owner: np.ndarray, genes: np.ndarray, queries: np.ndarray):
    """Evaluate each image's candidates ``genes`` (a, r, k, 5) in order, in rounds of doubling
    size, dropping an image at its first success. Returns the fitness (a, r), complete for
    every image that did not fall, and those images' indices (sorted, as ``owner`` is)."""
    a, r = genes.shape[:2]
    fitness = np.full((a, r), np.inf)
    live = np.arange(a)
    start, size = 0, _FIRST_ROUND
    while live.size and start < r:
        stop = min(start + size, r)
        fitness[live, start:stop], hit = group.evaluate_round(owner[live], genes[live, start:stop], queries)
        live = live[~hit]
        start, size = stop, size * 2
    return fitness, owner[live]


class _Group:
    """Images under attack together: candidate sampling, repair and batched evaluation, and
    the best candidate found so far per image (any success beats any failure)."""

    def __init__(self, fns, images, goal, targeted: bool, k: int, batch_size: int, rngs: list):
        self.fns, self.images, self.goal, self.targeted = fns, images, goal, targeted
        self.held = fns.hold(images)  # one device copy, gathered from per candidate
        self.size, (self.h, self.w) = len(images), images.shape[1:3]
        self.k, self.batch_size, self.rngs = k, batch_size, rngs  # one random stream per image
        self.best_fitness = np.full(self.size, np.inf)
        self.best_genes = np.zeros((self.size, k, 5), np.float32)

    def draw(self, owner: np.ndarray, r: int, su_colours: bool) -> np.ndarray:
        """Genes (a, r, k, 5) for images ``owner``, each from its own stream: uniform positions;
        colours uniform, or Su et al.'s normal."""
        genes = np.empty((len(owner), r, self.k, 5), np.float32)
        for j, image in enumerate(owner):
            rng = self.rngs[image]
            genes[j, ..., 0] = rng.integers(0, self.h, (r, self.k))
            genes[j, ..., 1] = rng.integers(0, self.w, (r, self.k))
            genes[j, ..., 2:] = rng.normal(0.5, _COLOUR_SD, (r, self.k, 3)) if su_colours else rng.random((r, self.k, 3))
        return genes

    def legalise(self, owner: np.ndarray, genes: np.ndarray) -> np.ndarray:
        """Round and clip positions, make each candidate's k positions distinct, clip colours
        and change a colour that equals its original pixel (it would change nothing)."""
        rows = np.clip(np.rint(genes[..., 0]), 0, self.h - 1).astype(np.int64)
        cols = np.clip(np.rint(genes[..., 1]), 0, self.w - 1).astype(np.int64)
        rows, cols = np.divmod(_distinct(rows * self.w + cols, self.h * self.w, [self.rngs[o] for o in owner]), self.w)
        colours = np.clip(genes[..., 2:], 0.0, 1.0).astype(np.float32)
        original = self.images[owner[:, None, None], rows, cols]
        unchanged = np.all(colours == original, axis=-1)
        colours[..., 0] = np.where(unchanged, (original[..., 0] < 0.5).astype(np.float32), colours[..., 0])
        return np.concatenate([rows[..., None], cols[..., None], colours], axis=-1).astype(np.float32)

    def evaluate(self, owner: np.ndarray, genes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fitness to minimise, success), each (a, r), for genes (a, r, k, 5) of images ``owner``."""
        a, r = genes.shape[:2]
        flat = genes.reshape(a * r, self.k, 5)
        who = np.repeat(owner, r).astype(np.int32)
        pos = (flat[..., 0] * self.w + flat[..., 1]).astype(np.int32)
        colours = np.ascontiguousarray(flat[..., 2:])
        logits = np.empty((a * r, self.fns.num_classes), np.float32)
        for part in batches(a * r, self.batch_size):
            logits[part] = self.fns.pixel_logits(self.held, who[part], pos[part], colours[part])
        goal = self.goal[who]
        rows = np.arange(a * r)
        pred = logits.argmax(axis=1)
        z_goal = logits[rows, goal]
        logits[rows, goal] = -np.inf
        z_other = logits.max(axis=1)
        if self.targeted:
            fitness, success = z_other - z_goal, pred == goal
        else:
            fitness, success = z_goal - z_other, pred != goal
        return fitness.reshape(a, r), success.reshape(a, r)

    def evaluate_round(self, owner: np.ndarray, genes: np.ndarray, queries: np.ndarray):
        """Evaluate genes (a, r, k, 5) as if one at a time, each image stopping at its first
        success: only candidates up to it count as queries, and each image keeps that
        success, or else its lowest-fitness candidate so far, as its best.
        Returns (fitness (a, r), whether each image succeeded)."""
        fitness, success = self.evaluate(owner, genes)
        r = genes.shape[1]
        hit = success.any(axis=1)
        first = success.argmax(axis=1)
        pick = np.where(hit, first, fitness.argmin(axis=1))
        rows = np.arange(len(owner))
        better = hit | (fitness[rows, pick] < self.best_fitness[owner])  # an image that falls leaves
        self.best_fitness[owner[better]] = fitness[rows, pick][better]
        self.best_genes[owner[better]] = genes[better, pick[better]]
        queries[owner] += np.where(hit, first + 1, r)
        return fitness, hit


def _donors(rngs: list, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of ``size`` members of each image's population, three distinct other members
    (drawn from that image's stream)."""
    own = np.broadcast_to(np.arange(size)[None, :, None], (len(rngs), size, 1))
    drawn = np.stack([rng.integers(0, size, (size, 3)) for rng in rngs]) if rngs else np.zeros((0, size, 3), np.int64)
    picks = _distinct(np.concatenate([own, drawn], axis=2), size, rngs)
    return picks[..., 1], picks[..., 2], picks[..., 3]


def _distinct(values: np.ndarray, high: int, rngs: list) -> np.ndarray:
    """Redraw, uniformly in [0, high), every entry on the last axis that repeats an earlier
    entry of its row, until all entries of each row differ (the first entry never moves).
    Entry ``j`` of the first axis redraws from ``rngs[j]``."""
    values = values.copy()
    while True:
        repeats = np.triu(values[..., :, None] == values[..., None, :], 1).any(axis=-2)
        if not repeats.any():
            return values
        for j in np.flatnonzero(repeats.reshape(len(values), -1).any(axis=1)):
            values[j][repeats[j]] = rngs[j].integers(0, high, int(repeats[j].sum()))
