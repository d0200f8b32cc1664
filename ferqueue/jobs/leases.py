"""Leases on running units: who holds one, how its holder keeps it alive, and when a holder is
known to be dead without waiting for its lease to run out.

A unit's lease is two ledger columns (``lease_owner``, ``lease_expires_at``) on its shard, or on
its job for the finishing unit. The worker that starts the unit takes it (a conditional UPDATE),
a ``Heartbeat`` thread renews it every third of its length while the unit works, and recording
the unit requires still holding it. A lease that was not renewed in time lets the supervisor
(``ferqueue.jobs.supervise``) re-enqueue the unit. Times are the workers' UTC clocks: keep the
hosts' clocks in step (NTP) to well within a lease.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ferqueue.db import ledger
from ferqueue.errors import LeaseLost
from ferqueue.jobs.registry import Progress

# owners whose attempts run in this process now
_active: set[str] = set()


@contextmanager
def attempt_owner() -> Iterator[str]:
    """A lease holder's name for one attempt, ``host:pid:token`` (two threads of one process, or
    two attempts of one child, are different holders), counted as running here while the
    ``with`` block lasts."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    _active.add(owner)
    try:
        yield owner
    finally:
        _active.discard(owner)


def gone(owner: str | None) -> bool:
    """Whether the holder ran on this host and has ended: its process is gone (a pool child
    killed mid-unit, whose task Celery redelivers at once), or it is this process and no longer
    runs (an attempt that could not release its lease when the database was away, retried
    here). Its lease need not be waited out."""
    parts = (owner or "").split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return owner not in _active
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child not yet reaped by its parent
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def dead_holder(row) -> str | None:
    """The holder of a shard's or job's live lease when ``gone``: the one a new attempt may take
    the lease from (``take_from`` of the ledger's begin functions)."""
    owner = row.lease_owner
    if owner is None or row.lease_expires_at is None or row.lease_expires_at < ledger.now():
        return None
    return owner if gone(owner) else None


class Heartbeat:
    """Renews ``owner``'s lease on one unit every third of ``seconds`` on a thread, while the
    ``with`` block runs. Once a renewal finds the lease taken over, ``lost`` is set and the
    guarded progress callback raises LeaseLost, so the work stops at its next step. A renewal
    that fails on a connection is tried again at the next beat."""

    def __init__(self, db, unit: str, row_id: int, owner: str, seconds: float):
        self.db, self.unit, self.row_id, self.owner, self.seconds = db, unit, row_id, owner, seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{unit}-{row_id}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not ledger.renew_lease(self.db, self.unit, self.row_id, self.owner, self.seconds):
                    self.lost.set()
                    return
            except Exception:  # noqa: BLE001 - the database may be back at the next beat; if not, the lease expires
                continue

    def check(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(f"the lease of {self.owner} on {self.unit} {self.row_id} was taken over")

    def guard(self, progress: Progress) -> Callable[[str, int, int], None]:
        """``progress``, checking the lease first: a unit whose lease was taken over stops."""

        def guarded(label: str, done: int, total: int) -> None:
            self.check()
            progress(label, done, total)

        return guarded
