"""Shard files are atomic, content-addressed and float32; merges refuse anything altered."""

import h5py
import numpy as np
import pytest

from ferqueue.attacks import AttackResult
from ferqueue.errors import StoreError
from ferqueue.store import AdversarialStore, merge_shards, read_shard, verify_shard, write_shard

PROVENANCE = {"model_sha256": "m" * 64, "dataset_fingerprint": "d" * 64, "split_fingerprint": "s" * 64,
              "image_size": 8}


def _result(n, seed=0, eps=0.01, attack="fgsm"):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 8, 8, 3), dtype=np.float32) * 0.9 + 0.05
    x_adv = (x + eps * np.sign(rng.standard_normal(x.shape))).astype(np.float32)
    return x, AttackResult(
        attack=attack, params={"eps": eps}, x_adv=x_adv, labels=rng.integers(0, 7, n), target=None,
        clean_pred=rng.integers(0, 7, n), adv_pred=rng.integers(0, 7, n),
        clean_conf=rng.random(n, dtype=np.float32), adv_conf=rng.random(n, dtype=np.float32),
        success=rng.random(n) > 0.5, queries=np.ones(n, np.int64), linf=np.full(n, eps, np.float32),
        l0=np.full(n, 64), seconds=0.5,
    )


def _write(tmp_path, index, start, stop, seed=0, **attrs):
    _x, result = _result(stop - start, seed)
    info = write_shard(tmp_path, index, result, np.arange(start, stop), {**PROVENANCE, **attrs})
    return result, info


def _entry(info, index, start, stop, key="fgsm-eps0.01"):
    return {"index": index, "attack_key": key, "start": start, "stop": stop, "path": str(info.path),
            "sha256": info.sha256, "size_bytes": info.size_bytes}


def test_shard_is_float32_exact_and_content_addressed(tmp_path):
    result, info = _write(tmp_path, 3, 0, 10)
    assert info.path.name == f"shard-00003-{info.sha256[:12]}.h5"
    assert not list(tmp_path.glob("*.tmp")), "no temporary file is left behind"
    arrays, attrs = read_shard(info.path)
    assert arrays["images"].dtype == np.float32
    np.testing.assert_array_equal(arrays["images"], result.x_adv)  # bit-exact: an 8-bit store would lose eps=0.01
    np.testing.assert_array_equal(arrays["source_index"], np.arange(10))
    np.testing.assert_array_equal(arrays["target"], np.full(10, -1))
    assert attrs["model_sha256"] == PROVENANCE["model_sha256"] and attrs["attack"] == "fgsm"
    from ferqueue.files import fingerprint_file

    assert info.size_bytes == info.path.stat().st_size and info.sha256 == fingerprint_file(info.path)
    assert int(attrs["index"]) == 3 and len(arrays["labels"]) == 10


def test_rewriting_a_shard_never_overwrites_a_different_file(tmp_path):
    _r1, first = _write(tmp_path, 0, 0, 5, seed=1)
    _r2, second = _write(tmp_path, 0, 0, 5, seed=2)
    assert first.path != second.path and first.path.exists() and second.path.exists()
    verify_shard(first.path, first.sha256, first.size_bytes)


def test_write_failure_leaves_nothing(tmp_path):
    _x, result = _result(4)
    result.x_adv = result.x_adv.astype(np.float64)
    with pytest.raises(StoreError, match="float32"):
        write_shard(tmp_path, 0, result, np.arange(4), PROVENANCE)
    assert list(tmp_path.iterdir()) == []


def test_verify_shard_detects_missing_and_altered_files(tmp_path):
    _r, info = _write(tmp_path, 0, 0, 5)
    with h5py.File(info.path, "r+") as handle:
        handle["images"][0, 0, 0, 0] += 0.001
    with pytest.raises(StoreError, match="altered|bytes"):
        verify_shard(info.path, info.sha256, info.size_bytes)
    info.path.unlink()
    with pytest.raises(StoreError, match="missing"):
        verify_shard(info.path, info.sha256)


def test_merge_concatenates_in_index_order(tmp_path):
    r0, i0 = _write(tmp_path, 0, 0, 6, seed=0)
    r1, i1 = _write(tmp_path, 1, 6, 9, seed=1)
    merged = merge_shards([_entry(i1, 1, 6, 9), _entry(i0, 0, 0, 6)], tmp_path, PROVENANCE)  # order given reversed
    store = AdversarialStore(merged.path, merged.sha256)
    assert merged.path.name == f"store-{merged.sha256[:12]}.h5", "the manifest is content-addressed"
    assert store.attacks == ["fgsm-eps0.01"] and merged.size_bytes == merged.path.stat().st_size
    part = store.read("fgsm-eps0.01", ("images", "source_index", "labels"))
    np.testing.assert_array_equal(part["source_index"], np.arange(9))
    np.testing.assert_array_equal(part["images"], np.concatenate([r0.x_adv, r1.x_adv]))
    np.testing.assert_array_equal(part["labels"], np.concatenate([r0.labels, r1.labels]))
    assert store.verify() == []
    assert store.summary()[0]["n_examples"] == 9


def test_merge_refuses_altered_missing_gapped_or_foreign_shards(tmp_path):
    _r0, i0 = _write(tmp_path, 0, 0, 6)
    _r1, i1 = _write(tmp_path, 1, 6, 9, seed=1)
    out = tmp_path
    with pytest.raises(StoreError, match="gap or overlap"):
        merge_shards([_entry(i0, 0, 0, 6), _entry(i1, 1, 7, 10)], out, PROVENANCE)
    with pytest.raises(StoreError, match="was made with model_sha256"):
        merge_shards([_entry(i0, 0, 0, 6), _entry(i1, 1, 6, 9)], out, {**PROVENANCE, "model_sha256": "x" * 64})
    with open(i1.path, "r+b") as handle:  # flip one byte in the middle of the file
        handle.seek(i1.size_bytes // 2)
        byte = handle.read(1)
        handle.seek(i1.size_bytes // 2)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(StoreError, match="altered"):
        merge_shards([_entry(i0, 0, 0, 6), _entry(i1, 1, 6, 9)], out, PROVENANCE)
    i0.path.unlink()
    with pytest.raises(StoreError, match="missing"):
        merge_shards([_entry(i0, 0, 0, 6)], out, PROVENANCE)
    assert not list(tmp_path.glob("*store-*")), "a refused merge writes no store"


def test_store_refuses_altered_file_and_foreign_provenance(tmp_path):
    _r0, i0 = _write(tmp_path, 0, 0, 4)
    merged = merge_shards([_entry(i0, 0, 0, 4)], tmp_path, PROVENANCE)
    out, sha = merged.path, merged.sha256
    store = AdversarialStore(out, sha)
    store.check_provenance(dataset_fingerprint=PROVENANCE["dataset_fingerprint"])
    with pytest.raises(StoreError, match="dataset_fingerprint"):
        store.check_provenance(dataset_fingerprint="other")
    with pytest.raises(StoreError, match="no attack"):
        store.read("pgd-eps0.03")
    with h5py.File(out, "r+") as handle:
        handle.attrs["dataset_fingerprint"] = "f" * 64  # the manifest's bytes change
    with pytest.raises(StoreError, match="altered"):
        AdversarialStore(out, sha)
    with pytest.raises(StoreError, match="does not exist"):
        AdversarialStore(tmp_path / "nope.h5")


def test_two_attacks_become_two_groups(tmp_path):
    _xa, ra = _result(3, 0)
    _xb, rb = _result(3, 1, attack="pixel")
    ia = write_shard(tmp_path, 0, ra, np.arange(3), PROVENANCE)
    ib = write_shard(tmp_path, 1, rb, np.arange(3), PROVENANCE)
    merged = merge_shards([_entry(ia, 0, 0, 3), _entry(ib, 1, 0, 3, key="pixel-random-k1-q100")], tmp_path,
                          PROVENANCE)
    store = AdversarialStore(merged.path, merged.sha256)
    assert sorted(store.attacks) == ["fgsm-eps0.01", "pixel-random-k1-q100"]
    assert {row["attack"] for row in store.summary()} == {"fgsm", "pixel"}
