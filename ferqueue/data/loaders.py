"""load_dataset: CK+ folders, FER2013 folders and CSV files, and synthetic faces.

Loading has two stages. The manifest (ids, labels, subjects, subsets and a content hash per
example) is always built, because the fingerprint comes from it; the images are then either
decoded and preprocessed, or read from the cache entry named by that fingerprint.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ferqueue.data.dataset import Dataset
from ferqueue.data.emotions import (
    FER2013_CLASSES,
    FER2013_CODES,
    canonical_emotion,
    known_emotion_names,
)
from ferqueue.data.preprocess import check_image_size, decode_image, preprocess_image
from ferqueue.data.synthetic import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_VERSION,
    subject_name,
    synthetic_face,
    synthetic_label,
    synthetic_subject,
)
from ferqueue.errors import ConfigError, DataError
from ferqueue.files import fingerprint_file, write_atomically

Progress = Callable[[int, int], None]

SUBSETS = ("train", "validation", "test")  # order of examples in datasets with subsets
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
DEFAULT_SYNTHETIC_SIZE = 700
MIN_SYNTHETIC_SIZE = 7  # one example per expression
FER2013_SIDE = 48
_CSV_USAGE = {"Training": "train", "PublicTest": "validation", "PrivateTest": "test"}
_SUBJECT_PREFIX = re.compile(r"S\d+")
_WORKERS = min(8, os.cpu_count() or 1)  # PIL releases the GIL while decoding and resizing
_CHUNK = 256
_SEGMENT = 8192  # images rendered and written to the cache at a time


@dataclass(frozen=True)
class _Manifest:
    name: str
    source: str
    class_names: tuple[str, ...]
    ids: list[str]
    labels: list[int]
    subjects: list[str] | None
    subsets: list[str] | None
    contents: list[str]  # per-example content sha256 (or generator version)
    render: Callable[[int, int], np.ndarray]  # (example index, image_size) -> preprocessed image


def load_dataset(
    spec: str,
    image_size: int = 75,
    *,
    cache_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Load ``spec`` ("synthetic[:N]", a CK+ or FER2013 folder, or a FER2013 CSV) preprocessed
    to image_size x image_size RGB float32 in [0, 1].

    With ``cache_dir`` the preprocessed array is kept as ``<name>-<fingerprint[:16]>-<size>.npy``
    and later loads memory-map it read-only instead of decoding. ``progress(done, total)``
    follows decoding; a cache hit reports (total, total) once.
    """
    image_size = check_image_size(image_size)
    manifest = _manifest(str(spec))
    fingerprint = _fingerprint(manifest)
    images = _images(manifest, fingerprint, image_size, cache_dir, progress)
    return Dataset(
        name=manifest.name,
        source=manifest.source,
        images=images,
        labels=_frozen(np.asarray(manifest.labels, dtype=np.int64)),
        class_names=manifest.class_names,
        subjects=None if manifest.subjects is None else _frozen(np.asarray(manifest.subjects, dtype=str)),
        subsets=None if manifest.subsets is None else _frozen(np.asarray(manifest.subsets, dtype=str)),
        ids=tuple(manifest.ids),
        fingerprint=fingerprint,
        image_size=image_size,
    )


def source_exists(spec: str) -> bool:
    """Whether a dataset spec can be loaded from its source here: synthetic faces render
    anywhere; a folder or CSV file must be on this host."""
    spec = str(spec)
    return spec == "synthetic" or spec.startswith("synthetic:") or Path(spec).expanduser().exists()


def cache_entry(dataset: Dataset, cache_dir: str | Path) -> tuple[Path, dict]:
    """A dataset loaded with ``cache_dir`` as files a host without its source can load it from:
    (the cache's .npy, its manifest as JSON-able facts, the .npy's sha256 among them)."""
    path = cache_path(cache_dir, dataset.name, dataset.fingerprint, dataset.image_size)
    sha = _checksum_path(path).read_text().strip()
    facts = {"name": dataset.name, "source": dataset.source, "class_names": list(dataset.class_names),
             "ids": list(dataset.ids), "labels": dataset.labels.tolist(),
             "subjects": None if dataset.subjects is None else dataset.subjects.tolist(),
             "subsets": None if dataset.subsets is None else dataset.subsets.tolist(),
             "fingerprint": dataset.fingerprint, "image_size": dataset.image_size, "sha256": sha}
    return path, facts


def from_cache_entry(path: Path, facts: dict) -> Dataset:
    """The dataset of a cache entry (``cache_entry``'s files), its images memory-mapped read-only."""
    images = np.load(path, mmap_mode="r")
    n, size = len(facts["labels"]), facts["image_size"]
    if images.shape != (n, size, size, 3) or images.dtype != np.float32:
        raise DataError(f"the dataset cache {path} holds {images.shape} {images.dtype}, expected ({n}, {size}, {size}, 3)")
    return Dataset(
        name=facts["name"], source=facts["source"], images=images,
        labels=_frozen(np.asarray(facts["labels"], dtype=np.int64)), class_names=tuple(facts["class_names"]),
        subjects=None if facts["subjects"] is None else _frozen(np.asarray(facts["subjects"], dtype=str)),
        subsets=None if facts["subsets"] is None else _frozen(np.asarray(facts["subsets"], dtype=str)),
        ids=tuple(facts["ids"]), fingerprint=facts["fingerprint"], image_size=size)


def _frozen(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _manifest(spec: str) -> _Manifest:
    if spec == "synthetic" or spec.startswith("synthetic:"):
        return _synthetic_manifest(spec)
    path = Path(spec).expanduser().resolve()
    if not spec or not path.exists():
        raise DataError(
            f"dataset not found: {spec!r} (expected a folder, a FER2013 CSV file or 'synthetic[:N]')"
        )
    if path.is_file():
        return _csv_manifest(path)
    subdirs = {p.name: p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if subdirs.keys() & set(SUBSETS):
        return _fer_folder_manifest(path, subdirs)
    if subdirs:
        return _ck_folder_manifest(path, subdirs)
    raise DataError(
        f"{path} is neither a CK+ folder (<root>/<emotion>/*.png) nor a FER2013 folder "
        "(<root>/train|validation|test/<emotion>/*.jpg): it has no subfolders"
    )


# --- synthetic -------------------------------------------------------------------------------


def _synthetic_manifest(spec: str) -> _Manifest:
    count = spec.partition(":")[2]
    try:
        n = int(count) if count else DEFAULT_SYNTHETIC_SIZE
    except ValueError:
        raise ConfigError(f"bad synthetic dataset size in {spec!r}: expected 'synthetic:N'") from None
    if n < MIN_SYNTHETIC_SIZE:
        raise ConfigError(f"synthetic dataset needs at least {MIN_SYNTHETIC_SIZE} examples, got {n}")
    indices = range(n)
    return _Manifest(
        name="synthetic",
        source=f"synthetic:{n}",
        class_names=SYNTHETIC_CLASSES,
        ids=[f"synthetic:{i}" for i in indices],
        labels=[synthetic_label(i) for i in indices],
        subjects=[subject_name(synthetic_subject(i)) for i in indices],
        subsets=None,
        contents=[SYNTHETIC_VERSION] * n,
        render=lambda i, size: synthetic_face(i, size)[0],
    )


# --- image folders ---------------------------------------------------------------------------


def _class_dirs(dirs: Sequence[Path]) -> dict[str, Path]:
    """Class folders by name, each checked to be a known emotion, once."""
    seen: dict[str, Path] = {}
    for folder in sorted(dirs):
        emotion = canonical_emotion(folder.name)
        if emotion is None:
            raise DataError(f"class folder {folder} is not a known emotion; known: {known_emotion_names()}")
        if emotion in seen:
            raise DataError(f"class folders {seen[emotion]} and {folder} are both {emotion!r}")
        seen[emotion] = folder
    return {folder.name: folder for folder in seen.values()}


def _image_files(folder: Path) -> list[Path]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        raise DataError(f"class folder {folder} is empty (no {', '.join(sorted(IMAGE_EXTENSIONS))} files)")
    return files


def _ck_folder_manifest(root: Path, subdirs: dict[str, Path]) -> _Manifest:
    classes = _class_dirs(list(subdirs.values()))
    class_names = tuple(sorted(classes))
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        found = _image_files(classes[name])
        files += found
        labels += [label] * len(found)
    prefixes = [_SUBJECT_PREFIX.match(f.name) for f in files]
    # Subject ids only when every file carries one: a partial list would mislead a subject split.
    subjects = [m.group(0) for m in prefixes] if all(prefixes) else None
    return _file_manifest(root.name, root, class_names, files, labels, subjects, None)


def _fer_folder_manifest(root: Path, subdirs: dict[str, Path]) -> _Manifest:
    unexpected = sorted(set(subdirs) - set(SUBSETS))
    if unexpected:
        raise DataError(
            f"FER2013 folder {root} has unexpected subfolders {unexpected}; expected {', '.join(SUBSETS)}"
        )
    for required in ("train", "test"):
        if required not in subdirs:
            raise DataError(f"FER2013 folder {root} has no {required!r} subfolder")
    per_subset = {}
    for subset in (s for s in SUBSETS if s in subdirs):
        folders = [p for p in subdirs[subset].iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not folders:
            raise DataError(f"FER2013 subset folder {subdirs[subset]} has no class folders")
        per_subset[subset] = _class_dirs(folders)
    class_names = tuple(sorted({name for classes in per_subset.values() for name in classes}))
    files: list[Path] = []
    labels: list[int] = []
    subsets: list[str] = []
    for subset, classes in per_subset.items():
        for label, name in enumerate(class_names):
            if name in classes:
                found = _image_files(classes[name])
                files += found
                labels += [label] * len(found)
                subsets += [subset] * len(found)
    return _file_manifest("fer2013", root, class_names, files, labels, None, subsets)


def _file_manifest(
    name: str,
    root: Path,
    class_names: tuple[str, ...],
    files: list[Path],
    labels: list[int],
    subjects: list[str] | None,
    subsets: list[str] | None,
) -> _Manifest:
    def read(i: int) -> bytes:
        try:
            return files[i].read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read image {files[i]}: {exc}") from None

    data = _parallel(read, len(files))
    return _Manifest(
        name=name,
        source=str(root),
        class_names=class_names,
        ids=[f.relative_to(root).as_posix() for f in files],
        labels=labels,
        subjects=subjects,
        subsets=subsets,
        contents=[hashlib.sha256(d).hexdigest() for d in data],
        render=lambda i, size: preprocess_image(decode_image(data[i], str(files[i])), size),
    )


# --- FER2013 CSV -----------------------------------------------------------------------------


def _csv_manifest(path: Path) -> _Manifest:
    if path.suffix.lower() != ".csv":
        raise DataError(f"{path} is a file but not a FER2013 CSV (emotion,pixels,Usage)")
    code_to_label = [FER2013_CLASSES.index(name) for name in FER2013_CODES]
    labels: list[int] = []
    subsets: list[str] | None = []
    pixels: list[np.ndarray] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            columns = {c.strip().lower(): i for i, c in enumerate(header or [])}
            for required in ("emotion", "pixels"):
                if required not in columns:
                    raise DataError(f"FER2013 CSV {path} has no {required!r} column (header: {header})")
            unexpected = sorted(set(columns) - {"emotion", "pixels", "usage"})
            if unexpected:  # a misspelt "Usage" would otherwise silently drop the predefined split
                raise DataError(f"FER2013 CSV {path} has unexpected column(s) {unexpected}; "
                                "expected emotion,pixels[,Usage]")
            emotion_col, pixels_col = columns["emotion"], columns["pixels"]
            usage_col = columns.get("usage")
            if usage_col is None:
                subsets = None
            for row in reader:
                if not row:
                    continue  # blank line
                where = f"row {len(labels)} (line {reader.line_num}) of {path}"
                if len(row) < len(header):
                    raise DataError(f"{where} has {len(row)} fields, expected {len(header)}")
                labels.append(code_to_label[_csv_emotion(row[emotion_col], where)])
                pixels.append(_csv_pixels(row[pixels_col], where))
                if subsets is not None:
                    usage = row[usage_col].strip()
                    if usage not in _CSV_USAGE:
                        raise DataError(
                            f"{where}: unknown Usage {usage!r}; expected one of {list(_CSV_USAGE)}"
                        )
                    subsets.append(_CSV_USAGE[usage])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read FER2013 CSV {path}: {exc}") from None
    if not labels:
        raise DataError(f"FER2013 CSV {path} has no rows")
    return _Manifest(
        name="fer2013",
        source=str(path),
        class_names=FER2013_CLASSES,
        ids=[f"row:{i}" for i in range(len(labels))],
        labels=labels,
        subjects=None,
        subsets=subsets,
        contents=[hashlib.sha256(p.tobytes()).hexdigest() for p in pixels],
        render=lambda i, size: preprocess_image(Image.fromarray(pixels[i]), size),
    )


def _csv_emotion(value: str, where: str) -> int:
    try:
        code = int(value.strip())
    except ValueError:
        raise DataError(f"{where}: emotion {value!r} is not an integer") from None
    if not 0 <= code < len(FER2013_CODES):
        raise DataError(f"{where}: emotion {code} is outside 0..{len(FER2013_CODES) - 1}")
    return code


def _csv_pixels(value: str, where: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # numpy < 2.3 warns on junk instead
            ints = np.fromstring(value, dtype=np.int64, sep=" ")  # 5x faster than split + int
    except (ValueError, DeprecationWarning):
        raise DataError(f"{where}: pixel values are not all integers") from None
    expected = FER2013_SIDE * FER2013_SIDE
    if ints.size != expected:
        raise DataError(f"{where} has {ints.size} pixel values, expected {expected} (48x48)")
    if ints.min() < 0 or ints.max() > 255:
        raise DataError(f"{where}: pixel values outside 0..255")
    return ints.astype(np.uint8).reshape(FER2013_SIDE, FER2013_SIDE)


# --- fingerprint, images and cache -----------------------------------------------------------


def _fingerprint(m: _Manifest) -> str:
    """sha256 over the manifest; independent of image_size and of where the dataset lives."""
    h = hashlib.sha256(b"ferqueue-manifest-v1\n")
    h.update(json.dumps(list(m.class_names)).encode() + b"\n")
    for i, example_id in enumerate(m.ids):
        subject = "" if m.subjects is None else m.subjects[i]
        subset = "" if m.subsets is None else m.subsets[i]
        h.update(f"{example_id}\t{m.labels[i]}\t{subject}\t{subset}\t{m.contents[i]}\n".encode())
    return h.hexdigest()


def cache_path(cache_dir: str | Path, name: str, fingerprint: str, image_size: int) -> Path:
    return Path(cache_dir) / f"{name}-{fingerprint[:16]}-{image_size}.npy"


def _images(m: _Manifest, fingerprint: str, image_size: int, cache_dir, progress) -> np.ndarray:
    shape = (len(m.ids), image_size, image_size, 3)
    if cache_dir is None:
        images = np.empty(shape, dtype=np.float32)
        _render_into(images, m, image_size, progress=progress)
        return _frozen(images)
    path = cache_path(cache_dir, m.name, fingerprint, image_size)
    cached = _read_cache(path, shape)
    if cached is not None:
        if progress is not None:
            progress(shape[0], shape[0])
        return cached
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create cache dir {path.parent}: {exc}") from None
    return _write_cache(path, shape, m, image_size, progress)


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _read_cache(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached array, or None when it is missing or unusable (it will be rewritten). The
    cache is trusted only when its bytes match the checksum written with it: a replaced or
    damaged file is rebuilt from the source images, never used."""
    try:
        expected = _checksum_path(path).read_text().strip()
        images = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != shape or images.dtype != np.float32:
        return None
    if fingerprint_file(path) != expected:
        warnings.warn(f"the dataset cache {path} does not match its checksum: rebuilding it from the source",
                      stacklevel=3)
        return None
    return images


def _write_cache(path: Path, shape, m: _Manifest, image_size: int, progress: Progress | None) -> np.ndarray:
    """Render every image into the cache file, a segment at a time, written in order with plain
    writes: the memory it takes is one segment, however large the dataset (a memory map would
    keep every page it wrote resident)."""
    n = shape[0]

    def write(tmp: Path) -> None:
        segment = np.empty((min(_SEGMENT, n), *shape[1:]), np.float32)
        with open(tmp, "wb") as out:
            np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                                                       "fortran_order": False, "shape": shape})
            for start in range(0, n, _SEGMENT):
                part = segment[: min(_SEGMENT, n - start)]
                _render_into(part, m, image_size, start, n, progress)
                out.write(part.tobytes())

    _final, sha = write_atomically(path.parent, write, lambda _sha: path.name, prefix=f".{path.name}.")
    write_atomically(path.parent, lambda tmp: tmp.write_text(sha + "\n"), lambda _sha: _checksum_path(path).name,
                     prefix=f".{path.name}.sha256.")
    return np.load(path, mmap_mode="r")


def _render_into(out: np.ndarray, m: _Manifest, image_size: int, first: int = 0, total: int | None = None,
                 progress: Progress | None = None) -> None:
    """Examples first..first+len(out) of the manifest, preprocessed, into ``out``."""
    total = len(out) if total is None else total

    def render(i: int) -> None:
        out[i] = m.render(first + i, image_size)

    _parallel(render, len(out), None if progress is None else (lambda done, _n: progress(first + done, total)))


def _parallel(fn: Callable[[int], object], n: int, progress: Progress | None = None) -> list:
    """[fn(0), ..., fn(n-1)] computed in a thread pool in chunks; progress(done, n) as they finish."""
    results: list = [None] * n

    def run(start: int, stop: int) -> int:
        for i in range(start, stop):
            results[i] = fn(i)
        return stop - start

    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        futures = [pool.submit(run, s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
        done = 0
        try:
            for future in as_completed(futures):
                done += future.result()
                if progress is not None:
                    progress(done, n)
        except BaseException:
            for future in futures:
                future.cancel()  # a bad file stops the load without decoding the rest
            raise
    return results
