"""The paper's preprocessing: decode, RGB, bilinear resize to image_size, float32 in [0, 1]."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ferqueue.errors import ConfigError, DataError

MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 512
# the smallest source image a face could be read from: anything smaller is refused, not blown up
MIN_SOURCE_SIDE = 16


def check_image_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)):
        raise ConfigError(f"image size must be an integer, got {image_size!r}")
    if not MIN_IMAGE_SIZE <= image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"image size {image_size} is outside [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}]")
    return int(image_size)


def preprocess_image(image: Image.Image, image_size: int) -> np.ndarray:
    """A PIL image as a float32 (image_size, image_size, 3) array in [0, 1]."""
    # Resizing grayscale before replicating it to 3 channels gives the same pixels as
    # converting to RGB first, for a third of the work.
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    pixels = np.asarray(image.resize((image_size, image_size), Image.Resampling.BILINEAR))
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    return np.divide(pixels, np.float32(255.0), dtype=np.float32)


def decode_image(data: bytes, where: str) -> Image.Image:
    """Decode encoded image bytes fully; ``where`` names the file in the error."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open is lazy: truncated data only fails here
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}") from None
    if min(image.size) < MIN_SOURCE_SIDE:
        raise DataError(f"image {where} is {image.size[0]}x{image.size[1]} pixels: too small to hold a face "
                        f"(at least {MIN_SOURCE_SIDE}x{MIN_SOURCE_SIDE})")
    return image
