"""Model artifacts: saved as .keras, fingerprinted by sha256, loaded in safe mode."""

from __future__ import annotations

import os
from pathlib import Path

from ferqueue.errors import StoreError
from ferqueue.files import fingerprint_file, write_atomically


def save_model(model, directory: str | Path, stem: str) -> tuple[Path, str]:
    """Save atomically to ``directory/<stem>-<sha12>.keras``; return (path, sha256)."""
    return write_atomically(directory, lambda tmp: model.save(tmp), lambda sha: f"{stem}-{sha[:12]}.keras",
                            prefix=f".{stem}-", suffix=".keras")


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

    try:
        return keras.models.load_model(path, safe_mode=True, compile=False)
    except (ValueError, TypeError, OSError, KeyError) as exc:
        # Keras refuses a lambda or an unknown class in safe mode, and a file that is not a model
        reason = " ".join(str(exc).split())[:300]
        raise StoreError(f"model file {path} cannot be loaded in Keras safe mode: {reason}") from None
