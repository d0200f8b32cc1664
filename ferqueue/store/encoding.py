"""How a shard keeps its adversarial images: compactly, and always read back bit-exact float32.

An 8-bit or lossy image would destroy an eps=0.01 perturbation, so every encoding is checked
at write time: the images are decoded again from what would be stored and compared bit for bit
with the attack's output; an encoding that does not reproduce them is not used.

- ``pixels``: a k-pixel attack's changes, (row, col, r, g, b) per changed pixel; the image is
  the original with those pixels set. 20 bytes per example for one pixel.
- ``sign``: FGSM without a random start, x_adv = clip(clip(x + eps * s, x - eps, x + eps), 0, 1)
  with s in {-1, 0, +1}: s as int8, redone with the attack's own float32 arithmetic.
- ``xor``: any other perturbation (PGD, FGSM with a random start): the bit patterns of x_adv
  XOR those of x, as uint32. Exact by construction; the high bytes are mostly zero, which gzip
  turns into little (byte-shuffle does worse here: see ops/bench/store_filters.py).
- ``dense``: the float32 images themselves (gzip), when no originals are at hand.

Every encoding but ``dense`` needs the original images to decode: the dataset is the other half
of the store (``originals`` below: a function from source indices to float32 images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ferqueue.errors import StoreError

DENSE, SIGN, XOR, PIXELS = "dense", "sign", "xor", "pixels"
ENCODINGS = (DENSE, SIGN, XOR, PIXELS)
# the dataset each encoding keeps in a shard file
DATASET = {DENSE: "images", SIGN: "signs", XOR: "xor", PIXELS: "pixels"}

Originals = Callable[[np.ndarray], np.ndarray]  # source indices -> float32 (n, h, w, 3) images


def encode(x_adv: np.ndarray, x: np.ndarray | None, attack: str, params: dict) -> tuple[str, np.ndarray, dict]:
    """(encoding, the array to store, attrs needed to decode) for the attack's images ``x_adv``
    of originals ``x``: the most compact encoding that gives the images back bit for bit."""
    if x is None:
        return DENSE, x_adv, {}
    candidates = []
    if attack == "pixel":
        candidates.append((PIXELS, lambda: _pixels(x_adv, x, int(params["k"])), {}))
    if attack == "fgsm" and not params.get("random_start"):
        eps = np.float32(params["eps"])
        candidates.append((SIGN, lambda: _signs(x_adv, x), {"eps": float(eps)}))
    for name, make, attrs in candidates:
        stored = make()
        if stored is not None and np.array_equal(decode(name, stored, x, attrs).view(np.uint32), x_adv.view(np.uint32)):
            return name, stored, attrs
    return XOR, x_adv.view(np.uint32) ^ x.view(np.uint32), {}


def decode(encoding: str, stored: np.ndarray, x: np.ndarray | None, attrs: dict) -> np.ndarray:
    """The float32 adversarial images from what a shard stores and their originals ``x``."""
    if encoding == DENSE:
        return np.asarray(stored, np.float32)
    if x is None:
        raise StoreError(f"images stored as {encoding} need the original images to be read")
    x = np.asarray(x, np.float32)
    if encoding == XOR:
        return (x.view(np.uint32) ^ np.asarray(stored, np.uint32)).view(np.float32)
    if encoding == SIGN:
        eps = np.float32(attrs["eps"])
        # the engine's step, in the same float32 operations: x + (1 * eps) * s, onto the ball, onto [0, 1]
        moved = x + (np.float32(1.0) * eps) * np.asarray(stored, np.float32)
        return np.clip(np.clip(moved, x - eps, x + eps), np.float32(0.0), np.float32(1.0))
    if encoding == PIXELS:
        out = x.copy()
        genes = np.asarray(stored, np.float32)
        rows, cols = genes[..., 0].astype(np.int64), genes[..., 1].astype(np.int64)
        out[np.arange(len(out))[:, None], rows, cols] = genes[..., 2:]
        return out
    raise StoreError(f"unknown image encoding {encoding!r}")


def _signs(x_adv: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The direction each value moved (a value clipped at 0 or 1, or that did not move, still
    decodes to itself: the step is redone with the clipping)."""
    return np.sign(x_adv - x).astype(np.int8)


def _pixels(x_adv: np.ndarray, x: np.ndarray, k: int) -> np.ndarray | None:
    """(n, k, 5) genes of the pixels that differ, or None when some image does not differ in
    exactly k pixels (then another encoding is used)."""
    changed = np.any(x_adv != x, axis=-1)
    if not np.all(changed.sum(axis=(1, 2)) == k):
        return None
    n = len(x)
    where = np.argwhere(changed)  # (n * k, 3): image, row, col, in image order
    genes = np.empty((n, k, 5), np.float32)
    genes[..., 0] = where[:, 1].reshape(n, k)
    genes[..., 1] = where[:, 2].reshape(n, k)
    genes[..., 2:] = x_adv[where[:, 0], where[:, 1], where[:, 2]].reshape(n, k, 3)
    return genes
