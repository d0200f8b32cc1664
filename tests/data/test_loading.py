"""load_dataset on small real CK+ folders, FER2013 folders and FER2013 CSV files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from ferqueue.data import load_dataset
from ferqueue.data.emotions import FER2013_CLASSES
from ferqueue.data.preprocess import preprocess_image

from .factories import FER_CODES, face_pixels, write_csv, write_image


def test_ck_folder_shapes_labels_ids_and_subjects(ck_folder):
    ds = load_dataset(str(ck_folder), 20)

    assert len(ds) == 9
    assert ds.images.shape == (9, 20, 20, 3) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert ds.labels.dtype == np.int64
    assert ds.class_names == ("anger", "happy", "surprise")
    # Sorted by class, then file name.
    assert ds.ids == (
        "anger/S005_001_00000010.png",
        "anger/S005_001_00000011.png",
        "anger/S010_004_00000017.png",
        "happy/S010_006_00000015.png",
        "happy/S022_005_00000001.png",
        "surprise/S005_001_00000009.png",
        "surprise/S010_002_00000011.png",
        "surprise/S022_003_00000020.png",
        "surprise/S022_003_00000021.png",
    )
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert ds.subjects.tolist() == ["S005", "S005", "S010", "S010", "S022", "S005", "S010", "S022", "S022"]
    assert ds.subsets is None
    assert ds.name == "ckmini"
    assert ds.source == str(ck_folder.resolve())
    assert ds.image_size == 20


def test_ck_images_are_the_preprocessed_files(ck_folder):
    ds = load_dataset(str(ck_folder), 33)
    for i in (0, 4, 8):
        with Image.open(ck_folder / ds.ids[i]) as im:
            expected = np.asarray(im.convert("RGB").resize((33, 33), Image.Resampling.BILINEAR)) / 255.0
        np.testing.assert_allclose(ds.images[i], expected, atol=1e-6)


def test_describe_is_json_and_counts(ck_folder):
    info = load_dataset(str(ck_folder), 16).describe()
    assert json.loads(json.dumps(info)) == info
    assert info["num_examples"] == 9
    assert info["class_counts"] == {"anger": 3, "happy": 2, "surprise": 4}
    assert info["n_subjects"] == 3
    assert info["subsets"] is None
    assert info["image_size"] == 16 and info["name"] == "ckmini"
    assert len(info["fingerprint"]) == 64


def test_images_are_read_only_and_take_copies(ck_folder):
    ds = load_dataset(str(ck_folder), 16)
    with pytest.raises(ValueError):
        ds.images[0, 0, 0, 0] = 0.5
    x, y = ds.take([8, 0])
    assert x.dtype == np.float32 and x.shape == (2, 16, 16, 3)
    assert y.tolist() == [2, 0]
    x[:] = 0.0  # a copy: the dataset is untouched
    assert ds.images[8].max() > 0


def test_files_without_subject_prefix_give_no_subjects(ck_folder):
    write_image(ck_folder / "happy" / "frame_0001.png", 7)
    assert load_dataset(str(ck_folder), 16).subjects is None


def test_other_image_formats_are_read_and_other_files_ignored(tmp_path):
    root = tmp_path / "mixed"
    for k, ext in enumerate((".png", ".jpg", ".jpeg", ".bmp", ".PNG")):
        write_image(root / "fear" / f"S001_{k}{ext}", k)
        write_image(root / "sad" / f"S002_{k}{ext}", 10 + k)
    (root / "fear" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("files beside the class folders are not classes")
    ds = load_dataset(str(root), 16)
    assert len(ds) == 10
    assert ds.class_names == ("fear", "sad")


def test_fer_folder_records_subsets_in_order(fer_folder):
    ds = load_dataset(str(fer_folder), 24)
    assert ds.name == "fer2013"
    assert ds.class_names == FER2013_CLASSES
    assert ds.subjects is None
    assert len(ds) == 7 * 3 + 3 * 1 + 7 * 2
    subsets = ds.subsets.tolist()
    assert subsets == ["train"] * 21 + ["validation"] * 3 + ["test"] * 14
    assert ds.ids[0] == "train/angry/train_0.jpg"
    assert ds.ids[21:24] == (
        "validation/angry/validation_0.jpg",
        "validation/happy/validation_0.jpg",
        "validation/sad/validation_0.jpg",
    )
    assert [ds.class_names[i] for i in ds.labels[21:24]] == ["angry", "happy", "sad"]
    assert ds.describe()["subsets"] == {"test": 14, "train": 21, "validation": 3}


def test_fer_folder_without_validation(fer_folder):
    shutil.rmtree(fer_folder / "validation")
    ds = load_dataset(str(fer_folder), 16)
    assert set(ds.subsets.tolist()) == {"train", "test"}


def test_csv_rows_labels_and_subsets(tmp_path):
    rows = [
        (FER_CODES[name], face_pixels(k), usage)
        for k, (name, usage) in enumerate(
            [
                ("happy", "Training"),
                ("angry", "PrivateTest"),
                ("neutral", "PublicTest"),
                ("sad", "Training"),
            ]
        )
    ]
    ds = load_dataset(str(write_csv(tmp_path / "fer.csv", rows)), 48)
    assert ds.name == "fer2013"
    assert (
        ds.class_names
        == FER2013_CLASSES
        == ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
    )
    assert [ds.class_names[i] for i in ds.labels] == ["happy", "angry", "neutral", "sad"]
    assert ds.subsets.tolist() == ["train", "test", "validation", "train"]
    assert ds.ids == ("row:0", "row:1", "row:2", "row:3")
    assert ds.subjects is None
    # At 48x48 preprocessing is the identity resize: the pixels come back exactly.
    np.testing.assert_array_equal(ds.images[1, :, :, 0], face_pixels(1) / np.float32(255))
    np.testing.assert_array_equal(ds.images[1, :, :, 0], ds.images[1, :, :, 2])


def test_csv_and_folder_give_the_same_label_ids_and_pixels(tmp_path):
    folder = tmp_path / "ferfolder"
    rows = []
    for k, (name, code) in enumerate(FER_CODES.items()):
        for subset, usage in (("train", "Training"), ("test", "PrivateTest")):
            seed = 50 + 2 * k + (subset == "test")
            write_image(folder / subset / name / "a.png", seed)  # PNG: lossless, same pixels as the CSV
            rows.append((code, face_pixels(seed), usage))
    from_folder = load_dataset(str(folder), 30)
    from_csv = load_dataset(str(write_csv(tmp_path / "fer.csv", rows)), 30)

    assert from_folder.class_names == from_csv.class_names
    by_folder = {
        (s, int(y)): from_folder.images[i]
        for i, (s, y) in enumerate(zip(from_folder.subsets, from_folder.labels, strict=True))
    }
    for i, (s, y) in enumerate(zip(from_csv.subsets, from_csv.labels, strict=True)):
        np.testing.assert_array_equal(from_csv.images[i], by_folder[(s, int(y))])
    # rows[0] is code 0 (Angry), the folder's train/angry/a.png: the same label id.
    assert from_csv.labels[0] == from_folder.labels[from_folder.ids.index("train/angry/a.png")] == 0


def test_csv_without_usage_and_with_spaced_header(tmp_path):
    path = write_csv(
        tmp_path / "plain.csv", [(3, face_pixels(1)), (5, face_pixels(2))], header=("emotion", " pixels")
    )
    ds = load_dataset(str(path), 16)
    assert ds.subsets is None
    assert [ds.class_names[i] for i in ds.labels] == ["happy", "surprise"]


def test_progress_reports_up_to_total(ck_folder):
    calls = []
    load_dataset(str(ck_folder), 16, progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (9, 9)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert {t for _, t in calls} == {9}


# --- fingerprint -----------------------------------------------------------------------------


def test_fingerprint_is_stable_independent_of_size_and_location(ck_folder, tmp_path):
    a = load_dataset(str(ck_folder), 16)
    b = load_dataset(str(ck_folder), 40)
    moved = shutil.copytree(ck_folder, tmp_path / "elsewhere" / "ckmini")
    c = load_dataset(str(moved), 16)
    assert a.fingerprint == b.fingerprint == c.fingerprint


def test_fingerprint_changes_with_one_file_content(ck_folder):
    before = load_dataset(str(ck_folder), 16).fingerprint
    write_image(ck_folder / "happy" / "S022_005_00000001.png", 999)
    assert load_dataset(str(ck_folder), 16).fingerprint != before


def test_fingerprint_changes_when_a_file_moves_class(ck_folder):
    before = load_dataset(str(ck_folder), 16).fingerprint
    (ck_folder / "happy" / "S022_005_00000001.png").rename(ck_folder / "anger" / "S022_005_00000001.png")
    assert load_dataset(str(ck_folder), 16).fingerprint != before


def test_csv_fingerprint_changes_with_one_pixel(tmp_path):
    pixels = face_pixels(3)
    first = load_dataset(str(write_csv(tmp_path / "a.csv", [(0, pixels, "Training")])), 16).fingerprint
    pixels[10, 10] ^= 1
    second = load_dataset(str(write_csv(tmp_path / "a.csv", [(0, pixels, "Training")])), 16).fingerprint
    assert first != second


# --- cache -----------------------------------------------------------------------------------


def _counting_decoder(monkeypatch) -> list:
    """Counts decode calls (the only patch these tests make); decoding itself is unchanged."""
    import ferqueue.data.loaders as loaders

    calls = []
    real = loaders.decode_image

    def counted(data, where):
        calls.append(where)
        return real(data, where)

    monkeypatch.setattr(loaders, "decode_image", counted)
    return calls


def test_cache_hit_returns_memmap_without_decoding(ck_folder, tmp_path, monkeypatch):
    calls = _counting_decoder(monkeypatch)
    cache = tmp_path / "cache"
    first = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert len(calls) == 9
    entry = cache / f"ckmini-{first.fingerprint[:16]}-20.npy"
    # the array and its checksum, no temporary files left
    assert sorted(p.name for p in cache.iterdir()) == [entry.name, entry.name + ".sha256"]

    calls.clear()
    second = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert calls == []
    assert isinstance(second.images, np.memmap) and not second.images.flags.writeable
    assert second.fingerprint == first.fingerprint
    np.testing.assert_array_equal(second.images, load_dataset(str(ck_folder), 20).images)
    np.testing.assert_array_equal(second.images, first.images)


def test_cache_entry_per_image_size_and_per_content(ck_folder, tmp_path):
    cache = tmp_path / "cache"
    load_dataset(str(ck_folder), 20, cache_dir=cache)
    load_dataset(str(ck_folder), 24, cache_dir=cache)
    write_image(ck_folder / "anger" / "S005_001_00000010.png", 4242)
    changed = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert len(list(cache.glob("ckmini-*.npy"))) == 3
    with Image.open(ck_folder / "anger" / "S005_001_00000010.png") as im:
        np.testing.assert_allclose(changed.images[0], preprocess_image(im, 20))


def test_a_replaced_cache_is_not_trusted_but_rebuilt_from_the_source(ck_folder, tmp_path, monkeypatch):
    """Any float32 array of the right shape in [0, 1] put in place of the cache is caught by the
    cache's checksum: the images come from the source files again."""
    cache = tmp_path / "cache"
    genuine = load_dataset(str(ck_folder), 20, cache_dir=cache)
    entry = cache / f"ckmini-{genuine.fingerprint[:16]}-20.npy"
    expected = np.array(genuine.images)  # a copy: the memmap would see the forged bytes
    forged = np.random.default_rng(0).random(expected.shape, dtype=np.float32)
    np.save(entry, forged)
    calls = _counting_decoder(monkeypatch)
    with pytest.warns(UserWarning, match="does not match its checksum"):
        again = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert len(calls) == 9, "decoded from the source files"
    np.testing.assert_array_equal(again.images, expected)
    assert not np.array_equal(np.load(entry), forged), "the forged cache was replaced"


def test_cache_with_wrong_shape_is_rewritten(ck_folder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    fingerprint = load_dataset(str(ck_folder), 20).fingerprint
    cache.mkdir()
    entry = cache / f"ckmini-{fingerprint[:16]}-20.npy"
    np.save(entry, np.zeros((2, 20, 20, 3), dtype=np.float32))
    calls = _counting_decoder(monkeypatch)

    ds = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert len(calls) == 9
    assert ds.images.shape == (9, 20, 20, 3) and ds.images.max() > 0
    assert np.load(entry, mmap_mode="r").shape == (9, 20, 20, 3)


def test_corrupt_cache_file_is_rewritten(ck_folder, tmp_path):
    cache = tmp_path / "cache"
    fingerprint = load_dataset(str(ck_folder), 20).fingerprint
    cache.mkdir()
    (cache / f"ckmini-{fingerprint[:16]}-20.npy").write_bytes(b"not an npy file")
    ds = load_dataset(str(ck_folder), 20, cache_dir=cache)
    assert ds.images.shape == (9, 20, 20, 3)


def test_synthetic_is_cached_too(tmp_path):
    first = load_dataset("synthetic:14", 16, cache_dir=tmp_path)
    second = load_dataset("synthetic:14", 16, cache_dir=tmp_path)
    assert (tmp_path / f"synthetic-{first.fingerprint[:16]}-16.npy").exists()
    np.testing.assert_array_equal(first.images, second.images)


def test_take_reads_the_cache_file_as_its_memory_map_would(tmp_path):
    """Images read from the cache with plain reads (so they do not stay resident) equal the
    memory map's, in any order, with repeats."""
    data = load_dataset("synthetic:300", 24, cache_dir=tmp_path)
    assert isinstance(data.images, np.memmap)
    for index in (np.arange(300), np.array([299, 0, 5, 5, 6, 7, 150]), np.array([], np.int64),
                  np.random.default_rng(0).permutation(300)[:77]):
        x, y = data.take(index)
        np.testing.assert_array_equal(x, np.asarray(data.images[index]))
        np.testing.assert_array_equal(y, data.labels[index])
        assert x.flags.writeable and x.dtype == np.float32
    with pytest.raises(IndexError):
        data.take(np.array([300]))
