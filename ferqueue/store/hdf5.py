"""HDF5 shard files and the merged store over them.

A shard holds one attack's examples for one index range of one split: its images, compactly
encoded (ferqueue.store.encoding), and per-example facts in small dtypes, all compressed. It is
written atomically (ferqueue.files) under a content-addressed name (``shard-00003-<sha12>.h5``),
so a redelivered task can never overwrite a shard that the ledger already points at.

The merged store (format 2) copies nothing: ``store-<sha12>.h5`` is a manifest of the verified shards
of each attack (their ranges, paths relative to the store's folder, sha256 and sizes) plus the
provenance and a summary. Reading an attack reads its shards, each checked against its sha256
the first time this process reads it: a missing or altered shard is an error, never zeros.
Stores of format 1 (self-contained copies) are still read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ferqueue.errors import StoreError
from ferqueue.files import fingerprint_file, verified_once, verify_file, write_atomically
from ferqueue.store.encoding import DATASET, DENSE, Originals, decode, encode
from ferqueue.store.layout import outcomes_name, shard_name, store_name

FORMAT_VERSION = 2
# per-example facts: the dtype kept on disk (small) and the dtype they are read back as
FIELDS = {
    "labels": (np.int16, np.int64),
    "source_index": (np.int64, np.int64),
    "target": (np.int16, np.int64),  # -1 when untargeted
    "clean_pred": (np.int16, np.int64),
    "adv_pred": (np.int16, np.int64),
    "clean_conf": (np.float32, np.float32),
    "adv_conf": (np.float32, np.float32),
    "success": (np.bool_, np.bool_),
    "queries": (np.int32, np.int64),
    "linf": (np.float32, np.float32),
    "l0": (np.int32, np.int64),
}
_PROVENANCE = ("model_sha256", "dataset_fingerprint", "split_fingerprint", "image_size")
_FIELD_CHUNK = 4096  # examples per chunk of a per-example field
_IMAGE_CHUNK = 64  # examples per chunk of images: a training batch reads few chunks
_FILTER = {"compression": "gzip", "compression_opts": 1, "shuffle": True}  # per-example fields
# images (signs, XOR bits, dense float32): gzip 4 without byte-shuffle, chosen by measurement
# (ops/bench/store_filters.py, results in ops/bench/results/): against shuffle + gzip 1 it keeps
# FGSM signs in 22% fewer bytes and PGD's XOR bits in 17% fewer; shuffle made the XOR bits larger
_IMAGE_FILTER = {"compression": "gzip", "compression_opts": 4}


@dataclass(frozen=True)
class StoredFile:
    """A file the store wrote, as the ledger records it."""

    path: Path
    sha256: str
    size_bytes: int


def _json_attrs(attrs: dict) -> dict:
    """HDF5 attributes: dicts and lists as JSON text, None left out (HDF5 has no null)."""
    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in attrs.items() if v is not None}


def _attr(value):
    return value.item() if isinstance(value, np.generic) else value


def _create(handle: h5py.File, name: str, data: np.ndarray, chunk: int, filters: dict = _FILTER) -> None:
    """A compressed dataset chunked along examples (an empty one unchunked, as HDF5 requires)."""
    if len(data) == 0:
        handle.create_dataset(name, data=data)
    else:
        handle.create_dataset(name, data=data, chunks=(min(len(data), chunk), *data.shape[1:]), **filters)


# ---- shards -------------------------------------------------------------------------------------


def write_shard(store_dir: Path, index: int, result, source_index: np.ndarray, attrs: dict,
                originals: np.ndarray | None = None) -> StoredFile:
    """Write an AttackResult as shard ``index`` of ``store_dir``, atomically.

    ``originals``: the clean images the attack started from, which lets the images be stored
    as what changed (decoded again with the dataset); without them they are stored whole.
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
    x = None if originals is None else np.asarray(originals, np.float32)
    encoding, stored, encoding_attrs = encode(x_adv, x, result.attack, result.params)
    values = {
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
            _create(handle, DATASET[encoding], stored, _IMAGE_CHUNK, _IMAGE_FILTER)
            _write_fields(handle, values)
            handle.attrs.update(_json_attrs({
                "format_version": FORMAT_VERSION,
                "kind": "shard",
                "index": index,
                "n_examples": n,
                "attack": result.attack,
                "attack_params": json.dumps(result.params, sort_keys=True),
                "encoding": encoding,
                "encoding_attrs": encoding_attrs,
                "image_shape": list(x_adv.shape[1:]),
                "seconds": float(result.seconds),
                "created_at": time.time(),
                **attrs,
            }))

    final, sha = write_atomically(store_dir, write, lambda digest: shard_name(index, digest),
                                  prefix=f".shard-{index:05d}-", suffix=".h5.tmp")
    return StoredFile(path=final, sha256=sha, size_bytes=final.stat().st_size)


def _write_fields(handle: h5py.File, values: dict) -> None:
    for name, (stored_dtype, _read) in FIELDS.items():
        _create(handle, name, np.asarray(values[name]).astype(stored_dtype), _FIELD_CHUNK)


def write_outcomes(store_dir: Path, index: int, outcomes: dict, attrs: dict) -> StoredFile:
    """An evaluation shard's per-example outcomes (no images), written as a shard is."""

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as handle:
            _write_fields(handle, outcomes)
            handle.attrs.update(_json_attrs({"format_version": FORMAT_VERSION, "kind": "outcomes", "index": index,
                                             "n_examples": len(outcomes["labels"]), **attrs}))

    final, sha = write_atomically(store_dir, write, lambda digest: outcomes_name(index, digest),
                                  prefix=f".outcomes-{index:05d}-", suffix=".h5.tmp")
    return StoredFile(path=final, sha256=sha, size_bytes=final.stat().st_size)


def read_outcomes(path: str | Path, sha256: str | None = None, size_bytes: int | None = None) -> tuple[dict, dict]:
    """An outcomes file's fields and attrs, checked against the ledger's sha256 when given."""
    if sha256 is not None:
        _verified_once(Path(path), sha256, size_bytes)
    arrays, attrs = read_shard(path, tuple(FIELDS))
    attrs["left_out"] = json.loads(attrs.get("left_out") or "{}")
    return arrays, attrs


def verify_shard(path: str | Path, sha256: str, size_bytes: int | None = None) -> None:
    """Refuse a shard that is missing or whose bytes differ from what the ledger recorded."""
    verify_file(path, sha256, size_bytes, "shard file")


def _verified_once(path: Path, sha256: str, size_bytes: int | None) -> None:
    verified_once(path, sha256, size_bytes, "shard file")


def _shard_attrs(handle: h5py.File) -> dict:
    attrs = {k: _attr(v) for k, v in handle.attrs.items()}
    attrs.setdefault("format_version", 1)
    attrs.setdefault("encoding", DENSE)
    attrs["encoding_attrs"] = json.loads(attrs.get("encoding_attrs") or "{}")
    return attrs


def read_shard(path: str | Path, fields: tuple[str, ...] = ("images", *FIELDS), originals: Originals | None = None,
               rows: slice = slice(None)) -> tuple[dict[str, np.ndarray], dict]:
    """Fields of a shard file (``rows`` of it), per-example facts in their read dtypes and the
    images as bit-exact float32; ``originals`` decodes images stored as changes."""
    try:
        with h5py.File(path, "r") as handle:
            attrs = _shard_attrs(handle)
            arrays = {}
            for name in fields:
                if name == "images":
                    continue
                if name not in FIELDS:
                    raise StoreError(f"a store has no field {name!r}; it has images, {', '.join(FIELDS)}")
                arrays[name] = handle[name][rows].astype(FIELDS[name][1])
            if "images" in fields:
                encoding = attrs["encoding"]
                stored = handle[DATASET[encoding]][rows]
                x = None
                if encoding != DENSE:
                    if originals is None:
                        raise StoreError(f"shard {path} keeps its images as {encoding} changes: reading them "
                                         "needs the original dataset")
                    index = arrays.get("source_index")
                    index = handle["source_index"][rows].astype(np.int64) if index is None else index
                    x = originals(index)
                arrays["images"] = decode(encoding, stored, x, attrs["encoding_attrs"])
    except OSError as exc:
        raise StoreError(f"{path} is not a readable shard file: {exc}") from None
    return arrays, attrs


# ---- the merged store ---------------------------------------------------------------------------


def merge_shards(shards: list[dict], store_dir: Path, attrs: dict) -> StoredFile:
    """Write the store's manifest over verified shards, one entry per attack key, as
    ``store_dir/store-<sha12>.h5``; no example is copied.

    ``shards``: dicts with index, attack_key, start, stop, path, sha256, size_bytes and, when
    known, n_success and queries. Every shard is checked against the ledger (sha256, size) and
    against the store's provenance; the examples of each attack must cover their index ranges
    without gap or overlap.
    """
    if not shards:
        raise StoreError("cannot merge a store with no shards")
    store_dir = Path(store_dir)
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
    groups = {}
    for key, group in sorted(by_attack.items()):
        entries, meta = [], {}
        for shard in group:
            path = Path(shard["path"])
            verify_shard(path, shard["sha256"], shard.get("size_bytes"))
            entry, meta = _manifest_entry(path, shard, attrs, store_dir)
            entries.append(entry)
        n = sum(e["stop"] - e["start"] for e in entries)
        size = sum(e["size_bytes"] for e in entries)
        groups[key] = {
            "attack": meta["attack"], "attack_params": meta["attack_params"], "n_examples": n,
            "bytes": size, "bytes_per_example": size / n if n else 0.0,
            "encodings": sorted({e["encoding"] for e in entries}),
            "n_success": _total(entries, "n_success"), "queries": _total(entries, "queries"),
            "shards": entries,
        }

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(_json_attrs({"format_version": FORMAT_VERSION, "kind": "store", **attrs}))
            out.attrs["attacks"] = json.dumps(sorted(groups))
            for key, group in groups.items():
                out.create_group(key).attrs.update(_json_attrs(group))

    final, sha = write_atomically(store_dir, write, store_name, prefix=".store-", suffix=".h5.tmp")
    return StoredFile(path=final, sha256=sha, size_bytes=final.stat().st_size)


def _manifest_entry(path: Path, shard: dict, attrs: dict, store_dir: Path) -> tuple[dict, dict]:
    """A shard's manifest entry, after checking its provenance and size against the plan."""
    with h5py.File(path, "r") as src:
        meta = _shard_attrs(src)
        n = len(src["labels"])
    for name in _PROVENANCE:
        if name in attrs and meta.get(name) != _attr(attrs[name]):
            raise StoreError(f"shard file {path} was made with {name}={meta.get(name)!r}, "
                             f"the store expects {attrs[name]!r}")
    if n != shard["stop"] - shard["start"]:
        raise StoreError(f"shard file {path} holds {n} examples, expected {shard['stop'] - shard['start']}")
    entry = {"index": shard["index"], "start": shard["start"], "stop": shard["stop"],
             "path": os.path.relpath(path, store_dir), "sha256": shard["sha256"],
             "size_bytes": path.stat().st_size, "encoding": meta["encoding"],
             "n_success": shard.get("n_success"), "queries": shard.get("queries")}
    return entry, meta


def _total(entries: list[dict], name: str) -> int | None:
    values = [e[name] for e in entries]
    return None if any(v is None for v in values) else int(sum(values))


class AdversarialStore:
    """Read access to a merged store: its attacks, provenance, summary and examples.

    ``sha256`` checks the store file (the manifest) against the ledger; each shard is checked
    where it is read. ``originals`` (source indices -> clean images) decodes images kept as
    changes; only reading images needs it. ``resolve(path, sha256, size)`` gives the local path
    of a shard the manifest names (fetching it from an object store: ``ferqueue.objects``).
    """

    def __init__(self, path: str | Path, sha256: str | None = None, originals: Originals | None = None,
                 resolve: Callable[[Path, str, int | None], Path] | None = None):
        self.path = Path(path)
        self.originals = originals
        self.resolve = resolve
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a store file (a store is job-NNNNNN/store-<sha12>.h5)")
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
                self._groups = {key: {k: _attr(v) for k, v in handle[key].attrs.items()}
                                for key in json.loads(self.attrs.get("attacks", "[]")) if key in handle}
        except OSError as exc:
            raise StoreError(f"{self.path} is not a ferqueue store: HDF5 cannot read it ({exc})") from None
        if kind != "store":
            raise StoreError(f"{self.path} is not a merged ferqueue store")
        self.format_version = int(self.attrs.get("format_version", 1))
        if self.format_version > FORMAT_VERSION:
            raise StoreError(f"store {self.path} is of format {self.format_version}; this ferqueue reads up to "
                             f"{FORMAT_VERSION}: upgrade ferqueue")
        self.attacks: list[str] = json.loads(self.attrs["attacks"])

    def check_provenance(self, **expected) -> None:
        """Refuse a store made from another model, dataset or split."""
        for name, value in expected.items():
            if value is not None and self.attrs.get(name) != value:
                raise StoreError(
                    f"store {self.path} was made with {name}={self.attrs.get(name)!r}, not {value!r}"
                )

    def _group(self, key: str) -> dict:
        if key not in self.attacks:
            raise StoreError(f"store {self.path} has no attack {key!r}; it holds {self.attacks}")
        return self._groups[key]

    def shards(self, key: str) -> list[dict]:
        """The shards of an attack, in example order, with absolute paths (format 2 only)."""
        group = self._group(key)
        entries = json.loads(group["shards"])
        return [{**e, "path": self.path.parent / e["path"]} for e in entries]

    def __len__(self) -> int:
        return sum(self.size(key) for key in self.attacks)

    def size(self, key: str) -> int:
        return int(self._group(key)["n_examples"])

    def parts(self, key: str, fields: tuple[str, ...] = ("images", "labels", "source_index"),
              rows: slice = slice(None)) -> Iterator[dict]:
        """An attack's examples (``rows`` of them, in order), shard by shard: memory stays one
        shard's worth however large the store is."""
        start, stop, _ = rows.indices(self.size(key))
        if self.format_version == 1:
            with h5py.File(self.path, "r") as handle:
                group = handle[key]
                yield {name: group[name][start:stop] for name in fields}
            return
        for entry in self.shards(key):
            lo, hi = max(start, entry["start"]), min(stop, entry["stop"])
            if lo >= hi:
                continue
            path = entry["path"]
            if self.resolve is not None:
                path = self.resolve(path, entry["sha256"], entry["size_bytes"])
            _verified_once(path, entry["sha256"], entry["size_bytes"])
            arrays, _attrs = read_shard(path, fields, self.originals, slice(lo - entry["start"], hi - entry["start"]))
            yield arrays

    def read(self, key: str, fields: tuple[str, ...] = ("images", "labels", "source_index"),
             rows: slice = slice(None)) -> dict:
        """An attack's examples (``rows`` of them) as whole arrays."""
        parts = list(self.parts(key, fields, rows))
        if not parts:
            return {name: np.zeros(0) for name in fields}
        return {name: np.concatenate([p[name] for p in parts]) for name in fields}

    def summary(self) -> list[dict]:
        rows = []
        for key in self.attacks:
            group = self._group(key)
            n = int(group["n_examples"])
            if self.format_version == 1 or group.get("n_success") is None or group.get("queries") is None:
                facts = self.read(key, ("success", "queries"))
                n_success, queries = int(facts["success"].sum()), int(facts["queries"].sum())
            else:
                n_success, queries = int(group["n_success"]), int(group["queries"])
            bytes_per_example = float(group.get("bytes_per_example", 0.0)) if self.format_version > 1 else \
                self.path.stat().st_size / max(len(self), 1)
            rows.append({
                "attack_key": key, "attack": group["attack"], "params": json.loads(group["attack_params"]),
                "n_examples": n, "dtype": "float32", "success_rate": n_success / n if n else 0.0,
                "mean_queries": queries / n if n else 0.0, "bytes_per_example": bytes_per_example,
                "encodings": json.loads(group["encodings"]) if "encodings" in group else [DENSE],
            })
        return rows

    def verify(self) -> list[str]:
        """Every check, every example: shard checksums, and images that decode to finite
        float32 values in [0, 1], fields of the right lengths, no source index twice. Returns a
        list of problems (empty when the store is sound)."""
        problems = []
        for key in self.attacks:
            seen: list[np.ndarray] = []
            n = 0
            try:
                for part in self.parts(key, ("images", *FIELDS)):
                    images = part["images"]
                    n += len(images)
                    if images.dtype != np.float32:
                        problems.append(f"{key}: images are {images.dtype}, not float32")
                    for name in FIELDS:
                        if len(part[name]) != len(images):
                            problems.append(f"{key}/{name}: {len(part[name])} values for {len(images)} images")
                    if len(images) and not np.isfinite(images).all():
                        problems.append(f"{key}: non-finite pixel values")
                    elif len(images) and (images.min() < 0.0 or images.max() > 1.0):
                        problems.append(f"{key}: pixel values outside [0,1] ({images.min()}..{images.max()})")
                    seen.append(part["source_index"])
            except StoreError as exc:
                problems.append(str(exc))
                continue
            if n != self.size(key):
                problems.append(f"{key}: {n} examples but the store records {self.size(key)}")
            source = np.concatenate(seen) if seen else np.zeros(0, np.int64)
            if len(np.unique(source)) != len(source):
                problems.append(f"{key}: duplicate source indices")
        return problems


def export_store(store: AdversarialStore, out_path: Path) -> tuple[str, int]:
    """One self-contained file (format 1: every attack's images as float32, and every field),
    written shard by shard; readable with h5py alone. Returns (sha256, size)."""
    out_path = Path(out_path)

    def write(tmp: Path) -> None:
        with h5py.File(tmp, "w") as out:
            out.attrs.update(_json_attrs({k: v for k, v in store.attrs.items() if k != "format_version"}))
            out.attrs.update({"format_version": 1, "kind": "store"})
            for row in store.summary():
                key = row["attack_key"]
                n = row["n_examples"]
                group = out.create_group(key)
                group.attrs.update({"attack": row["attack"], "attack_params": json.dumps(row["params"]),
                                    "n_examples": n})
                written = 0
                for part in store.parts(key, ("images", *FIELDS)):
                    if written == 0:
                        group.create_dataset("images", shape=(n, *part["images"].shape[1:]), dtype=np.float32,
                                             chunks=(min(max(n, 1), _IMAGE_CHUNK), *part["images"].shape[1:]),
                                             **_IMAGE_FILTER)
                        for name, (_stored, read) in FIELDS.items():
                            group.create_dataset(name, shape=(n,), dtype=read)
                    stop = written + len(part["images"])
                    for name in ("images", *FIELDS):
                        group[name][written:stop] = part[name]
                    written = stop

    _final, sha = write_atomically(out_path.parent, write, lambda _digest: out_path.name, prefix=".export-",
                                   suffix=".h5.tmp")
    return sha, out_path.stat().st_size

