"""Where a job's store lives under the store root and what clean-up may delete there.

    <store root>/job-000042/shard-00003-<sha12>.h5    one shard of a generation job, content-addressed
                           /outcomes-00003-<sha12>.h5 one shard of an evaluation job (per-example outcomes)
                           /store-<sha12>.h5           the merged store (a generation job's manifest)

Every file is content-addressed, so two attempts never write one name: a merge whose lease was
taken over cannot replace the store another merge recorded. One merge at a time is the job's
lease in the ledger (ferqueue.jobs.leases), which holds across hosts that share no folder.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from ferqueue.errors import StoreError

# what a writer leaves while it works (temporary names) and what it leaves when done
LEFTOVERS = (".shard-*.h5.tmp", ".outcomes-*.h5.tmp", ".store-*.h5.tmp", "shard-*.h5", "outcomes-*.h5", "store-*.h5")


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


def store_name(sha256: str) -> str:
    return f"store-{sha256[:12]}.h5"


def leftover(name: str) -> bool:
    """Whether a file of a job's folder is one that clean-up may delete unless it is recorded."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in LEFTOVERS)
