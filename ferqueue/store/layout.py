"""Where a job's store lives under the store root, what clean-up may delete there, and the lock
that lets one process at a time merge it.

    <store root>/job-000042/shard-00003-<sha12>.h5    one shard of a generation job, content-addressed
                           /outcomes-00003-<sha12>.h5 one shard of an evaluation job (per-example outcomes)
                           /store.h5                   the merged store (a generation job's manifest)
                           /.merge.lock                held while a merge runs
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ferqueue.errors import StoreError

STORE_FILE = "store.h5"
LOCK_FILE = ".merge.lock"
# what a writer leaves while it works (temporary names) and what it leaves when done
_LEFTOVERS = (".shard-*.h5.tmp", ".outcomes-*.h5.tmp", ".store-*.h5.tmp", "shard-*.h5", "outcomes-*.h5")


def job_dir(store_root: Path, job_id: int) -> Path:
    """A job's folder under the store root."""
    return Path(store_root).resolve() / f"job-{int(job_id):06d}"


def under_root(store_root: Path, path: str | Path) -> Path:
    """A user-given store path, refused unless it lies under the store root (relative paths
    are taken from the current folder, as a shell would)."""
    root = Path(store_root).resolve()
    resolved = Path(path).expanduser().resolve()
    if resolved != root and root not in resolved.parents:
        raise StoreError(f"{path} is outside the store root {root}; stores are read only from there "
                         "(FERQUEUE_STORE_ROOT)")
    return resolved


def shard_name(index: int, sha256: str) -> str:
    return f"shard-{index:05d}-{sha256[:12]}.h5"


def outcomes_name(index: int, sha256: str) -> str:
    return f"outcomes-{index:05d}-{sha256[:12]}.h5"


def discard_unrecorded_files(directory: Path, keep: set[Path]) -> list[Path]:
    """Delete what killed or losing attempts left in a store folder: half-written temporary
    files and shard files the ledger does not point at. Returns what was deleted."""
    kept = {Path(p).resolve() for p in keep}
    gone = []
    for pattern in _LEFTOVERS:
        for path in Path(directory).glob(pattern):
            if path.resolve() not in kept:
                path.unlink(missing_ok=True)
                gone.append(path)
    return gone


@contextmanager
def merge_lock(directory: Path) -> Iterator[bool]:
    """Hold the folder's merge lock if no other process does: yields True when held.

    The lock dies with its holder, so after a worker is killed mid-merge the redelivered
    merge can take over; a duplicate delivery while the merge runs gets False.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / LOCK_FILE, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
