"""Model artifacts: saved as .keras, fingerprinted by sha256, loaded in safe mode."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from ferqueue.errors import StoreError

_CHUNK = 1 << 20


def fingerprint_file(path: str | Path) -> str:
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save_model(model, directory: str | Path, stem: str) -> tuple[Path, str]:
    """Save atomically to ``directory/<stem>-<sha12>.keras``; return (path, sha256)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=directory, prefix=f".{stem}-")
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        sha = fingerprint_file(tmp)
        final = directory / f"{stem}-{sha[:12]}.keras"
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final, sha


def load_model(path: str | Path, expected_sha256: str | None = None):
    """Load a .keras file with safe_mode=True, refusing it if its bytes changed."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"model file {path} does not exist")
    if expected_sha256 is not None:
        actual = fingerprint_file(path)
        if actual != expected_sha256:
            raise StoreError(
                f"model file {path} has sha256 {actual[:12]}…, the ledger expects {expected_sha256[:12]}…"
            )
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    import ferqueue.models.layers  # noqa: F401  registers custom layers for safe mode

    return keras.models.load_model(path, safe_mode=True, compile=False)
