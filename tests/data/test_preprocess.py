"""The paper's preprocessing (RGB, bilinear resize, float32 in [0, 1]) and the emotion vocabulary."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ferqueue.data import EMOTIONS, canonical_emotion
from ferqueue.data.emotions import FER2013_CLASSES, FER2013_CODES
from ferqueue.data.preprocess import preprocess_image
from ferqueue.errors import DataError

from .factories import face_pixels


def test_grayscale_becomes_three_equal_channels_in_unit_range():
    out = preprocess_image(Image.fromarray(face_pixels(0)), 75)
    assert out.shape == (75, 75, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    np.testing.assert_array_equal(out[..., 0], out[..., 1])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_values_are_pixels_over_255():
    out = preprocess_image(Image.new("L", (48, 48), 51), 20)
    np.testing.assert_allclose(out, 0.2, atol=1e-7)
    same = preprocess_image(Image.fromarray(face_pixels(1)), 48)  # same size: no interpolation
    np.testing.assert_array_equal(same[..., 0], face_pixels(1).astype(np.float32) / 255)


def test_resize_is_pils_bilinear_on_rgb():
    gray = Image.fromarray(face_pixels(2))
    expected = np.asarray(gray.convert("RGB").resize((75, 75), Image.Resampling.BILINEAR)) / 255.0
    np.testing.assert_allclose(preprocess_image(gray, 75), expected, atol=1e-6)
    rgb = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 30, 3), dtype=np.uint8))
    expected = np.asarray(rgb.resize((16, 16), Image.Resampling.BILINEAR)) / 255.0
    np.testing.assert_allclose(preprocess_image(rgb, 16), expected, atol=1e-6)


def test_colour_is_kept_and_other_modes_are_converted():
    red = preprocess_image(Image.new("RGB", (10, 10), (255, 0, 0)), 8)
    assert red[..., 0].min() == 1.0 and red[..., 1:].max() == 0.0
    rgba = preprocess_image(Image.new("RGBA", (10, 10), (0, 0, 255, 128)), 8)
    assert rgba.shape == (8, 8, 3) and rgba[..., 2].min() == 1.0
    palette = Image.new("L", (10, 10), 200).convert("P")
    np.testing.assert_allclose(preprocess_image(palette, 8), 200 / 255, atol=1e-6)


def test_corrupt_bytes_name_the_source():
    from ferqueue.data.preprocess import decode_image

    with pytest.raises(DataError, match="faces/x.png"):
        decode_image(b"\x89PNG\r\n\x1a\nnot really", "faces/x.png")


def test_emotion_vocabulary():
    assert EMOTIONS == ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sadness", "surprise")
    assert all(canonical_emotion(name) == name for name in EMOTIONS)


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("angry", "anger"),
        ("Angry", "anger"),
        ("sad", "sadness"),
        ("SADNESS", "sadness"),
        ("happiness", "happy"),
        ("surprised", "surprise"),
        ("disgusted", "disgust"),
        ("fearful", "fear"),
        ("scared", "fear"),
        ("neutral", "neutral"),
        (" contempt ", "contempt"),
    ],
)
def test_aliases(alias, canonical):
    assert canonical_emotion(alias) == canonical


@pytest.mark.parametrize("name", ["bored", "", "train", "angryy"])
def test_unknown_emotions(name):
    assert canonical_emotion(name) is None


def test_fer2013_codes_and_label_order():
    # Kaggle's codes: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
    assert FER2013_CODES == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
    assert FER2013_CLASSES == tuple(sorted(FER2013_CODES))
    assert all(canonical_emotion(name) for name in FER2013_CODES)
