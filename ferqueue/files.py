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

_CHUNK = 1 << 20


def fingerprint_file(path: str | Path) -> str:
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
