"""Bad input gets a DataError or ConfigError naming the offending path or value."""

from __future__ import annotations

import re
import shutil

import pytest

from ferqueue.data import load_dataset
from ferqueue.errors import ConfigError, DataError

from .factories import face_pixels, write_csv, write_image


def test_missing_folder(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_dataset(str(missing))


def test_empty_spec():
    with pytest.raises(DataError, match="not found"):
        load_dataset("")


def test_folder_that_is_neither_layout(tmp_path):
    write_image(tmp_path / "flat" / "S001_1.png", 1)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "flat")) + ".*neither"):
        load_dataset(str(tmp_path / "flat"))


def test_file_that_is_not_a_csv(tmp_path):
    path = write_image(tmp_path / "one.png", 1)
    with pytest.raises(DataError, match=re.escape(str(path))):
        load_dataset(str(path))


def test_empty_class_folder(ck_folder):
    (ck_folder / "fear").mkdir()
    (ck_folder / "fear" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=re.escape(str(ck_folder / "fear")) + ".*empty"):
        load_dataset(str(ck_folder), 16)


def test_unknown_class_folder(ck_folder):
    (ck_folder / "bored").mkdir()
    with pytest.raises(DataError, match=re.escape(str(ck_folder / "bored"))) as err:
        load_dataset(str(ck_folder), 16)
    for known in ("anger", "happy", "sadness", "surprise", "neutral"):
        assert known in str(err.value)


def test_two_folders_for_one_emotion(ck_folder):
    write_image(ck_folder / "angry" / "S001_1.png", 1)
    with pytest.raises(DataError, match="anger.*angry|angry.*anger"):
        load_dataset(str(ck_folder), 16)


def test_corrupt_image_names_the_file(ck_folder):
    bad = ck_folder / "happy" / "S010_006_00000015.png"
    bad.write_bytes(bad.read_bytes()[:60])  # truncated PNG
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_dataset(str(ck_folder), 16)


def test_non_image_bytes_with_image_extension(ck_folder):
    bad = ck_folder / "anger" / "S099_001_00000001.jpg"
    bad.write_text("hello")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_dataset(str(ck_folder), 16)


def test_an_image_too_small_to_hold_a_face_is_refused_not_blown_up(ck_folder):
    from PIL import Image

    tiny = ck_folder / "happy" / "S009_001_00000001.png"
    Image.new("L", (1, 1), 128).save(tiny)
    with pytest.raises(DataError, match=re.escape(str(tiny)) + ".*1x1 pixels: too small"):
        load_dataset(str(ck_folder), 75)


def test_corrupt_image_is_found_even_with_a_cache(ck_folder, tmp_path):
    bad = ck_folder / "surprise" / "S022_003_00000021.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_dataset(str(ck_folder), 16, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written is kept


def test_fer_folder_without_test(fer_folder):
    shutil.rmtree(fer_folder / "test")
    with pytest.raises(DataError, match=re.escape(str(fer_folder)) + ".*'test'"):
        load_dataset(str(fer_folder), 16)


def test_fer_folder_with_an_unexpected_subfolder(fer_folder):
    (fer_folder / "extra").mkdir()
    with pytest.raises(DataError, match="extra"):
        load_dataset(str(fer_folder), 16)


def test_fer_folder_with_an_empty_class_folder(fer_folder):
    (fer_folder / "test" / "fear").mkdir(exist_ok=True)
    for f in (fer_folder / "test" / "fear").iterdir():
        f.unlink()
    with pytest.raises(DataError, match=re.escape(str(fer_folder / "test" / "fear"))):
        load_dataset(str(fer_folder), 16)


@pytest.mark.parametrize("column", ["emotion", "pixels"])
def test_csv_missing_a_column(tmp_path, column):
    header = tuple(c for c in ("emotion", "pixels", "Usage") if c != column)
    row = tuple({"emotion": 0, "pixels": face_pixels(0), "Usage": "Training"}[c] for c in header)
    path = write_csv(tmp_path / "cols.csv", [row], header=header)
    with pytest.raises(DataError, match=f"'{column}'") as err:
        load_dataset(str(path), 16)
    assert str(path) in str(err.value)


def _rows(bad_row: tuple) -> list[tuple]:
    return [(0, face_pixels(0), "Training"), (1, face_pixels(1), "Training"), bad_row]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ((3, face_pixels(2)[:47], "Training"), "row 2 .*2256 pixel values"),
        ((3, "1 2 three " + " ".join(["0"] * 2301), "Training"), "row 2 .*not all integers"),
        ((3, " ".join(["300"] * 2304), "Training"), "row 2 .*outside 0..255"),
        (("happy", face_pixels(2), "Training"), "row 2 .*'happy' is not an integer"),
        ((7, face_pixels(2), "Training"), "row 2 .*emotion 7 is outside"),
        ((-1, face_pixels(2), "Training"), "row 2 .*emotion -1 is outside"),
        ((3, face_pixels(2), "Holdout"), "row 2 .*'Holdout'"),
    ],
)
def test_csv_bad_row_names_the_row(tmp_path, bad_row, message):
    path = write_csv(tmp_path / "rows.csv", _rows(bad_row))
    with pytest.raises(DataError, match=message):
        load_dataset(str(path), 16)


def test_csv_without_rows(tmp_path):
    path = write_csv(tmp_path / "empty.csv", [])
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*no rows"):
        load_dataset(str(path), 16)


@pytest.mark.parametrize("size", [7, 513, 0, -5])
def test_image_size_out_of_range(size):
    with pytest.raises(ConfigError, match=str(size)):
        load_dataset("synthetic:7", size)


@pytest.mark.parametrize("spec", ["synthetic:6", "synthetic:0", "synthetic:abc"])
def test_bad_synthetic_size(spec):
    with pytest.raises(ConfigError, match=spec.split(":")[1]):
        load_dataset(spec, 16)
