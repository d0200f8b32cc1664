"""Compact shards read back bit-exact: real attacks on real (synthetic) faces, written with their
originals, decoded against the dataset; the merged store copies nothing and refuses a shard
that went missing or changed; format-1 stores (and exports) still read."""

from __future__ import annotations

import numpy as np
import pytest
from fq_helpers import flip_byte

from ferqueue.attacks import parse_attack
from ferqueue.errors import StoreError
from ferqueue.store import AdversarialStore, export_store, merge_shards, read_shard, write_shard

PROVENANCE = {"model_sha256": "m" * 64, "dataset_fingerprint": "d" * 64, "split_fingerprint": "s" * 64,
              "image_size": 32}


@pytest.fixture(scope="module")
def faces():
    from ferqueue.data import load_dataset

    return load_dataset("synthetic:1300", 32)


@pytest.fixture(scope="module")
def model(tiny_model_file):
    from ferqueue.models import load_model

    path, sha, _params = tiny_model_file
    return load_model(path, sha)


def _originals(faces):
    return lambda index: np.asarray(faces.images[index], np.float32)


@pytest.mark.parametrize("spec, encoding", [
    ("fgsm:eps=0.01", "sign"),
    ("fgsm:eps=0.03,random_start=true", "xor"),
    ("pgd:eps=0.02,steps=3", "xor"),
    ("pixel:k=1,method=random,queries=20", "pixels"),
    ("pixel:k=3,method=random,queries=10", "pixels"),
])
def test_every_encoding_reads_back_the_attacks_exact_float32(faces, model, tmp_path, spec, encoding):
    index = np.arange(100, 164)
    x, y = faces.take(index)
    result = parse_attack(spec)(model, x, y)
    written = write_shard(tmp_path, 0, result, index, PROVENANCE, originals=x)
    arrays, attrs = read_shard(written.path, originals=_originals(faces))
    assert attrs["encoding"] == encoding
    assert arrays["images"].dtype == np.float32
    np.testing.assert_array_equal(arrays["images"].view(np.uint32), result.x_adv.view(np.uint32))
    for name in ("labels", "adv_pred", "clean_pred", "success", "queries", "l0"):
        np.testing.assert_array_equal(arrays[name], getattr(result, name))
    np.testing.assert_array_equal(arrays["source_index"], index)
    with pytest.raises(StoreError, match="needs the original dataset"):
        read_shard(written.path)


def test_one_pixel_examples_take_at_most_64_bytes_and_fgsm_is_3x_smaller_than_dense(faces, model, tmp_path):
    index = np.arange(1024)
    x, y = faces.take(index)
    pixel = parse_attack("pixel:k=1,method=random,queries=5")(model, x, y)
    compact = write_shard(tmp_path / "pixel", 0, pixel, index, PROVENANCE, originals=x)
    assert compact.size_bytes / len(index) <= 64, f"{compact.size_bytes / len(index):.1f} bytes per example"
    fgsm = parse_attack("fgsm:eps=0.01")(model, x[:256], y[:256])
    signs = write_shard(tmp_path / "sign", 0, fgsm, index[:256], PROVENANCE, originals=x[:256])
    dense = write_shard(tmp_path / "dense", 0, fgsm, index[:256], PROVENANCE)
    raw = fgsm.x_adv.nbytes
    assert raw / signs.size_bytes >= 3, f"FGSM kept in {signs.size_bytes} bytes for {raw} bytes of float32"
    assert signs.size_bytes < dense.size_bytes


def _merged(faces, model, tmp_path, n_shards=3, size=32):
    entries = []
    attack = parse_attack("fgsm:eps=0.02")
    for i in range(n_shards):
        index = np.arange(i * size, (i + 1) * size)
        x, y = faces.take(index)
        written = write_shard(tmp_path, i, attack(model, x, y), index, PROVENANCE, originals=x)
        entries.append({"index": i, "attack_key": attack.key, "start": i * size, "stop": (i + 1) * size,
                        "path": str(written.path), "sha256": written.sha256, "size_bytes": written.size_bytes})
    merged = merge_shards(entries, tmp_path, PROVENANCE)
    return merged.path, merged.sha256, entries, attack


def test_the_merged_store_is_a_manifest_that_reads_every_shard(faces, model, tmp_path):
    out, sha, entries, attack = _merged(faces, model, tmp_path)
    assert out.stat().st_size < min(e["size_bytes"] for e in entries), "the merge wrote metadata only"
    store = AdversarialStore(out, sha, originals=_originals(faces))
    part = store.read(attack.key, ("images", "source_index"))
    np.testing.assert_array_equal(part["source_index"], np.arange(96))
    middle = store.read(attack.key, ("images", "source_index"), rows=slice(20, 70))
    np.testing.assert_array_equal(middle["source_index"], np.arange(20, 70))
    np.testing.assert_array_equal(middle["images"], part["images"][20:70])
    assert store.verify() == []
    row = store.summary()[0]
    assert row["n_examples"] == 96 and row["encodings"] == ["sign"] and row["bytes_per_example"] > 0


@pytest.mark.parametrize("damage", ["missing", "altered"])
def test_a_store_whose_shard_went_missing_or_changed_fails_to_read(faces, model, tmp_path, damage):
    out, sha, entries, attack = _merged(faces, model, tmp_path)
    victim = entries[1]["path"]
    if damage == "missing":
        (tmp_path / victim).unlink()
    else:
        flip_byte(victim)
    store = AdversarialStore(out, sha, originals=_originals(faces))  # the manifest itself is sound
    with pytest.raises(StoreError, match=damage):
        store.read(attack.key, ("images",))
    first = store.read(attack.key, ("source_index",), rows=slice(0, 32))  # the shards before it still read
    np.testing.assert_array_equal(first["source_index"], np.arange(32))
    assert any(damage in problem for problem in store.verify())


def test_an_export_is_one_self_contained_file_that_reads_as_format_1(faces, model, tmp_path):
    out, sha, _entries, attack = _merged(faces, model, tmp_path)
    store = AdversarialStore(out, sha, originals=_originals(faces))
    exported = tmp_path / "export" / "all.h5"
    export_store(store, exported)
    alone = AdversarialStore(exported)  # no dataset needed
    assert alone.format_version == 1 and alone.attacks == [attack.key]
    mine = store.read(attack.key, ("images", "labels", "source_index"))
    theirs = alone.read(attack.key, ("images", "labels", "source_index"))
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name])
    assert alone.verify() == [] and alone.summary()[0]["n_examples"] == 96
