"""Files written atomically and fingerprinted: the one way ferqueue puts bytes on disk.

A file is written under a temporary name in its final folder, fsynced, hashed, renamed into
place and the folder fsynced, so a reader sees the whole file or none of it, and a crash
leaves only a temporary file that clean-up may delete. Shards, merged stores, model
artifacts and the dataset cache all go through ``write_atomically``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
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


def verify_file(path: str | Path, sha256: str, size_bytes: int | None = None, what: str = "file") -> None:
    """Refuse a file that is missing or whose bytes differ from what the ledger recorded."""
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{what} {path} is missing")
    if size_bytes is not None and path.stat().st_size != size_bytes:
        raise StoreError(f"{what} {path} has {path.stat().st_size} bytes, the ledger recorded {size_bytes}")
    actual = fingerprint_file(path)
    if actual != sha256:
        raise StoreError(f"{what} {path} was altered: sha256 {actual[:12]}…, ledger {sha256[:12]}…")


_verified: set[tuple[str, str, int, int]] = set()


def verified_once(path: str | Path, sha256: str, size_bytes: int | None = None, what: str = "file") -> None:
    """verify_file, once per process for an unchanged file (same size and modification time)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise StoreError(f"{what} {path} is missing") from None
    key = (str(path), sha256, stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        verify_file(path, sha256, size_bytes, what)
        _verified.add(key)


def fsync_dir(directory: str | Path) -> None:
    """Make a rename in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(directory: str | Path, write: Callable[[Path], None], name: Callable[[str], str], *,
                     prefix: str = ".", suffix: str = ".tmp") -> tuple[Path, str]:
    """Write a file with ``write(temporary_path)``, then move it to ``directory / name(sha256)``.

    ``name`` receives the sha256 of the written bytes, so a content-addressed name costs
    nothing extra. Returns (final path, sha256). On any error the temporary file is removed
    and nothing at the final name changes.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        sha = fingerprint_file(tmp)
        final = directory / name(sha)
        os.replace(tmp, final)
        fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final, sha
