"""HDF5 shard and store files.

A shard holds one attack's examples for one index range of one split. It is written
atomically (ferqueue.files) under a content-addressed name (``shard-00003-<sha12>.h5``), so a
redelivered task can never overwrite a shard that the ledger already points at.

The merged store is a self-contained copy: one group per attack key, shards concatenated in
index order, attrs naming the source model, dataset and split fingerprints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ferqueue.errors import StoreError
from ferqueue.files import fingerprint_file, write_atomically
from ferqueue.store.layout import shard_name

FORMAT_VERSION = 1
# per-example arrays stored beside the images, with their dtypes
FIELDS = {
    "labels": np.int64,
    "source_index": np.int64,
    "target": np.int64,  # -1 when untargeted
    "clean_pred": np.int64,
    "adv_pred": np.int64,
    "clean_conf": np.float32,
    "adv_conf": np.float32,
    "success": np.bool_,
    "queries": np.int64,
    "linf": np.float32,
    "l0": np.int64,
}
_PROVENANCE = ("model_sha256", "dataset_fingerprint", "split_fingerprint", "image_size")


@dataclass(frozen=True)
class StoredFile:
    """A file the store wrote, as the ledger records it."""

    path: Path
    sha256: str
    size_bytes: int


def write_shard(store_dir: Path, index: int, result, source_index: np.ndarray, attrs: dict) -> StoredFile:
    """Write an AttackResult as shard ``index`` of ``store_dir``, atomically.

    ``attrs`` must carry the provenance (model_sha256, dataset_fingerprint, split_fingerprint,
    image_size) plus anything else worth keeping (job_id, start, stop).
    """
    missing = [key for key in _PROVENANCE if key not in attrs]
    if missing:
        raise ValueError(f"shard attrs lack {missing}")
    x_adv = np.asarray(result.x_adv)
    if x_adv.dtype != np.float32:
        raise StoreError(f"adversarial images must be float32, got {x_adv.dtype}")
    n = len(x_adv)
    arrays = {
        "labels": result.labels,
        "source_index": source_index,
        "target": result.target if result.target is not None else np.full(n, -1),
        "clean_pred": result.clean_pred,
        "adv_pred": result.adv_pred,
        "clean_conf": result.clean_conf,
        "adv_conf": result.adv_conf,
        "success": result.success,
        "queries": result.queries,
        "linf": result.linf,
        "l0": result.l0,
    }

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            handle.create_dataset("images", data=x_adv, chunks=_chunks(x_adv.shape))
            for name, dtype in FIELDS.items():
                handle.create_dataset(name, data=np.asarray(arrays[name], dtype=dtype))
            handle.attrs.update(
                {
                    "format_version": FORMAT_VERSION,
                    "kind": "shard",
                    "index": index,
                    "attack": result.attack,
                    "attack_params": json.dumps(result.params, sort_keys=True),
                    "seconds": float(result.seconds),
                    "created_at": time.time(),
                    **{k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()},
                }
            )

    final, sha = write_atomically(store_dir, write, lambda digest: shard_name(index, digest),
                                  prefix=f".shard-{index:05d}-", suffix=".h5.tmp")
    return StoredFile(path=final, sha256=sha, size_bytes=final.stat().st_size)


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if shape[0] == 0:
        return None
    return (min(shape[0], 32), *shape[1:])


def verify_shard(path: str | Path, sha256: str, size_bytes: int | None = None) -> None:
    """Refuse a shard that is missing or whose bytes differ from what the ledger recorded."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"shard file {path} is missing")
    if size_bytes is not None and path.stat().st_size != size_bytes:
        raise StoreError(f"shard file {path} has {path.stat().st_size} bytes, the ledger recorded {size_bytes}")
    actual = fingerprint_file(path)
    if actual != sha256:
        raise StoreError(f"shard file {path} was altered: sha256 {actual[:12]}…, ledger {sha256[:12]}…")


def read_shard(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as handle:
        arrays = {name: handle[name][()] for name in ("images", *FIELDS)}
        attrs = dict(handle.attrs)
    return arrays, attrs


def merge_shards(shards: list[dict], out_path: Path, attrs: dict) -> tuple[str, int]:
    """Copy verified shards into one store file, one group per attack key.

    ``shards``: dicts with index, attack_key, start, stop, path, sha256, size_bytes. Every
    shard is checked against the ledger and against the store's provenance; the examples of
    each attack must cover their index ranges without gap or overlap. Returns (sha256, size).
    """
    if not shards:
        raise StoreError("cannot merge a store with no shards")
    by_attack: dict[str, list[dict]] = {}
    for shard in shards:
        by_attack.setdefault(shard["attack_key"], []).append(shard)
    for key, group in by_attack.items():
        group.sort(key=lambda s: s["start"])
        for before, after in zip(group, group[1:], strict=False):
            if before["stop"] != after["start"]:
                raise StoreError(
                    f"attack {key}: shards {before['index']} and {after['index']} leave a gap or overlap "
                    f"({before['start']}:{before['stop']} then {after['start']}:{after['stop']})"
                )
    for shard in shards:
        verify_shard(shard["path"], shard["sha256"], shard.get("size_bytes"))

    out_path = Path(out_path)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as out:
            out.attrs.update({"format_version": FORMAT_VERSION, "kind": "store"})
            out.attrs.update({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items()})
            out.attrs["attacks"] = json.dumps(sorted(by_attack))
            for key, group in sorted(by_attack.items()):
                _copy_attack(out, key, group, attrs)

    _final, sha = write_atomically(out_path.parent, write, lambda _digest: out_path.name, prefix=".store-",
                                   suffix=".h5.tmp")
    return sha, out_path.stat().st_size


def _copy_attack(out: h5py.File, key: str, group: list[dict], attrs: dict) -> None:
    total = sum(s["stop"] - s["start"] for s in group)
    dest = out.create_group(key)
    written = 0
    for shard in group:
        with h5py.File(shard["path"], "r") as src:
            for name in _PROVENANCE:
                if name in attrs and _attr(src.attrs.get(name)) != _attr(attrs[name]):
                    raise StoreError(
                        f"shard file {shard['path']} was made with {name}={src.attrs.get(name)!r}, "
                        f"the store expects {attrs[name]!r}"
                    )
            n = src["images"].shape[0]
            if n != shard["stop"] - shard["start"]:
                raise StoreError(f"shard file {shard['path']} holds {n} examples, expected {shard['stop'] - shard['start']}")
            if written == 0:
                images = src["images"]
                dest.create_dataset("images", shape=(total, *images.shape[1:]), dtype=np.float32,
                                    chunks=_chunks((total, *images.shape[1:])))
                for name, dtype in FIELDS.items():
                    dest.create_dataset(name, shape=(total,), dtype=dtype)
                dest.attrs["attack"] = src.attrs["attack"]
                dest.attrs["attack_params"] = src.attrs["attack_params"]
            dest["images"][written : written + n] = src["images"][()]
            for name in FIELDS:
                dest[name][written : written + n] = src[name][()]
            written += n
    dest.attrs["n_examples"] = written


def _attr(value):
    return value.item() if isinstance(value, np.generic) else value


class AdversarialStore:
    """Read access to a merged store file, checked against its recorded sha256."""

    def __init__(self, path: str | Path, sha256: str | None = None):
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a store file (a store is job-NNNNNN/store.h5)")
        if not self.path.is_file():
            raise StoreError(f"store file {self.path} does not exist")
        if sha256 is not None:
            actual = fingerprint_file(self.path)
            if actual != sha256:
                raise StoreError(f"store file {self.path} was altered: sha256 {actual[:12]}…, ledger {sha256[:12]}…")
        try:
            with h5py.File(self.path, "r") as handle:
                kind = handle.attrs.get("kind")
                self.attrs = {k: _attr(v) for k, v in handle.attrs.items()}
        except OSError as exc:
            raise StoreError(f"{self.path} is not a ferqueue store: HDF5 cannot read it ({exc})") from None
        if kind != "store":
            raise StoreError(f"{self.path} is not a merged ferqueue store")
        self.attacks: list[str] = json.loads(self.attrs["attacks"])

    def check_provenance(self, **expected) -> None:
        """Refuse a store made from another model, dataset or split."""
        for name, value in expected.items():
            if value is not None and self.attrs.get(name) != value:
                raise StoreError(
                    f"store {self.path} was made with {name}={self.attrs.get(name)!r}, not {value!r}"
                )

    def read(self, attack_key: str, fields: tuple[str, ...] = ("images", "labels", "source_index")) -> dict:
        if attack_key not in self.attacks:
            raise StoreError(f"store {self.path} has no attack {attack_key!r}; it holds {self.attacks}")
        with h5py.File(self.path, "r") as handle:
            group = handle[attack_key]
            return {name: group[name][()] for name in fields}

    def summary(self) -> list[dict]:
        rows = []
        with h5py.File(self.path, "r") as handle:
            for key in self.attacks:
                group = handle[key]
                success = group["success"][()]
                rows.append(
                    {
                        "attack_key": key,
                        "attack": _attr(group.attrs["attack"]),
                        "params": json.loads(group.attrs["attack_params"]),
                        "n_examples": int(group.attrs["n_examples"]),
                        "dtype": str(group["images"].dtype),
                        "success_rate": float(success.mean()) if len(success) else 0.0,
                        "mean_queries": float(group["queries"][()].mean()) if len(success) else 0.0,
                    }
                )
        return rows

    def verify(self) -> list[str]:
        """Internal checks; returns a list of problems (empty when the store is sound)."""
        problems = []
        with h5py.File(self.path, "r") as handle:
            for key in self.attacks:
                if key not in handle:
                    problems.append(f"attack group {key} is missing")
                    continue
                group = handle[key]
                images = group["images"]
                n = int(group.attrs.get("n_examples", -1))
                if images.dtype != np.float32:
                    problems.append(f"{key}: images are {images.dtype}, not float32")
                if images.shape[0] != n:
                    problems.append(f"{key}: {images.shape[0]} images but n_examples={n}")
                for name in FIELDS:
                    if group[name].shape != (images.shape[0],):
                        problems.append(f"{key}/{name}: shape {group[name].shape}, expected ({images.shape[0]},)")
                lo, hi = float("inf"), float("-inf")
                for start in range(0, images.shape[0], 256):
                    block = images[start : start + 256]
                    lo, hi = min(lo, float(block.min())), max(hi, float(block.max()))
                    if not np.isfinite(block).all():
                        problems.append(f"{key}: non-finite pixel values")
                        break
                if images.shape[0] and (lo < 0.0 or hi > 1.0):
                    problems.append(f"{key}: pixel values outside [0,1] ({lo}..{hi})")
                source = group["source_index"][()]
                if len(np.unique(source)) != len(source):
                    problems.append(f"{key}: duplicate source indices")
        return problems
