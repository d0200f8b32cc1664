"""What kinds whose shards are files in the job's store folder share: discarding a losing
attempt's file, repairing damaged files before a resume, and clean-up after the finishing unit."""

from __future__ import annotations

from pathlib import Path

from ferqueue.db import ledger
from ferqueue.errors import StoreError
from ferqueue.jobs.registry import JobKind, ShardOutput


class FileShards(JobKind):
    """A sharded kind whose every shard is one content-addressed file under the job's folder."""

    def discard(self, rt, output: ShardOutput) -> None:
        rt.store_delete(output.path)

    def repair(self, rt, job) -> list[str]:
        """Every recorded shard file is checked (size, sha256); a missing or altered one is reset
        to be done again, and the job, if its finishing unit had claimed it, to run its shards."""
        from ferqueue.store import verify_shard

        messages = []
        for shard in ledger.shards(rt.db, job.id):
            if not shard.done:
                continue
            try:
                verify_shard(rt.store_file(shard.path, shard.sha256, shard.size_bytes), shard.sha256, shard.size_bytes)
            except StoreError as exc:
                if ledger.reset_shard(rt.db, shard.id, f"reset by resume: {exc}"):
                    messages.append(f"job {job.id} shard {shard.index} ({shard.attack_key}, {shard.start}:{shard.stop}): "
                                    f"{exc}; reset, it will be done again")
        if messages:
            ledger.unclaim_finish(rt.db, job.id)
        return messages

    def discard_finish(self, rt, job_id: int, finished) -> None:
        """A merge that lost its lease leaves its manifest (content-addressed) unless it is the
        one recorded."""
        if finished.store is not None and finished.store[0] != ledger.job(rt.db, job_id).store_path:
            rt.store_delete(finished.store[0])

    def keep_only_recorded(self, rt, job_id: int, extra=()) -> None:
        """Delete what killed or losing attempts left in the job's folder (and its object-store
        prefix): half-written files, and shard or store files the ledger does not point at."""
        from ferqueue.store.layout import leftover

        folder = rt.relative_to_store(rt.store_dir(job_id))
        recorded = {Path(s.path).name for s in ledger.shards(rt.db, job_id) if s.path} | {Path(p).name for p in extra}
        for name in rt.objects.store.names(folder):
            if leftover(name) and name not in recorded:
                rt.store_delete(f"{folder}/{name}")
