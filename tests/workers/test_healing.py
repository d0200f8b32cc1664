"""The cluster heals itself: a lost worker's shard is re-enqueued once its lease expires, an error
that may pass (the database restarting) is retried through Celery's autoretry, and a poison
shard stops after FERQUEUE_MAX_ATTEMPTS with its job naming it. Real workers, real brokers, a
real PostgreSQL stopped and started; the workers are frozen (SIGSTOP) when the ledger shows
the moment wanted and checked again before anything is killed or stopped."""

from __future__ import annotations

import os
import signal
import time

import pytest
from fq_cluster import BROKERS
from test_celery_jobs import LIMIT, SLOW_PIXEL, _frozen_mid_shard, _plan, assert_store_exact

from ferqueue.db import ledger
from ferqueue.queue import CeleryExecutor

pytestmark = pytest.mark.redis

SHORT_LEASE = {"FERQUEUE_LEASE_SECONDS": "3", "FERQUEUE_SUPERVISE_SECONDS": "1"}


def _frozen_worker_mid_shard(rt, job_id: int, worker):
    """The whole worker (main process and child) stopped while the ledger says one of its
    children runs a shard under a lease it still holds: (the shard as it was), or None."""
    running = [s for s in ledger.shards(rt.db, job_id) if s.status == "running"]
    if not running:
        return None
    os.killpg(worker.pid, signal.SIGSTOP)
    now = ledger.shard(rt.db, running[0].id)
    if now.status == "running" and now.lease_owner == running[0].lease_owner:
        return now
    os.killpg(worker.pid, signal.SIGCONT)
    return None


@pytest.mark.parametrize("broker", BROKERS)
def test_a_lost_worker_s_shard_is_re_enqueued_when_its_lease_expires(make_cluster, broker):
    """A whole worker SIGKILLed mid-shard: with Redis its task would come back only after the
    visibility timeout (90 s); a surviving worker's supervisor re-enqueues it once the lease
    (3 s here) expires. With RabbitMQ the broker redelivers it at once, and the new attempt
    takes over the lease of a process this host knows is dead. No `ferqueue resume`."""
    cluster = make_cluster(broker=broker, **SHORT_LEASE)
    rt = cluster.runtime()
    lost, _ = cluster.start_worker(queues="generate", name="lost")
    job = _plan(cluster, rt, [SLOW_PIXEL], limit=LIMIT)
    CeleryExecutor(rt).submit(job.id)
    victim = cluster.wait(lambda: _frozen_worker_mid_shard(rt, job.id, lost), 150, "a shard to run")
    cluster.kill(lost)
    killed_at = ledger.now()
    cluster.start_worker(queues="generate", name="survivor")
    cluster.wait_for_job(rt, job.id)
    assert_store_exact(cluster, rt, job.id, limit=LIMIT)
    redone = ledger.shard(rt.db, victim.id)
    assert redone.attempts == 2 and redone.worker != victim.worker and redone.started_at > killed_at
    if broker == "redis":
        assert f"re-enqueued job {job.id} shard {victim.index}" in cluster.log_tail(100_000), \
            "the supervisor re-enqueued it"
        assert cluster.queued("generate") == 0


def test_a_dropped_database_is_retried_through_autoretry(make_cluster, postgres_server):
    """PostgreSQL stops while a shard runs: recording it fails, the task is retried with backoff
    (Celery's autoretry on TransientError) instead of failing the job, and once the database is
    back the retry records the shard; the job ends done, exactly."""
    url = postgres_server.create_database(f"retry_{os.getpid()}_{time.monotonic_ns()}")
    cluster = make_cluster(url)
    rt = cluster.runtime()
    worker, _node = cluster.start_worker(queues="generate", concurrency=1)
    job = _plan(cluster, rt, [SLOW_PIXEL], limit=48)  # one shard
    CeleryExecutor(rt).submit(job.id)
    victim, child = cluster.wait(lambda: _frozen_mid_shard(rt, job.id), 150, "the shard to run")
    rt.db.engine.dispose()
    postgres_server.stop()
    os.kill(child, signal.SIGCONT)  # the attack ends; recording it meets a database that is away
    cluster.wait(lambda: "TransientError" in cluster.log_tail(100_000) and " retry: Retry in " in
                 cluster.log_tail(100_000), 120, "the task to be retried")
    postgres_server.start()
    done = cluster.wait_for_job(rt, job.id)
    assert done.status == "done", done.error
    assert_store_exact(cluster, rt, job.id, limit=48)
    assert ledger.shard(rt.db, victim.id).attempts == 2, "the retry took over the lease its first attempt kept"
    assert "OperationalError" in cluster.log_tail(100_000) and worker.poll() is None


def test_a_poison_shard_stops_after_its_attempts_and_the_job_names_it(make_cluster):
    """A shard whose worker child dies every time (an out-of-memory kill, say): after
    FERQUEUE_MAX_ATTEMPTS=2 the job fails, naming the shard and how its last attempt ended."""
    cluster = make_cluster(FERQUEUE_MAX_ATTEMPTS="2", **SHORT_LEASE)
    rt = cluster.runtime()
    cluster.start_worker(queues="generate", concurrency=1)
    job = _plan(cluster, rt, [SLOW_PIXEL], limit=48)
    CeleryExecutor(rt).submit(job.id)
    for attempt in (1, 2):
        victim, child = cluster.wait(lambda n=attempt: _frozen_mid_shard(rt, job.id, attempts=n), 150,
                                     f"attempt {attempt} to run")
        os.kill(child, signal.SIGKILL)
    failed = cluster.wait_for_job(rt, job.id)
    assert failed.status == "failed"
    assert f"shard {victim.index} (pixel-random-k1-q150, 0:48) failed 2 attempts" in failed.error, failed.error
    assert f"attempt 2 on {victim.worker} was lost" in failed.error, failed.error
    shard = ledger.shard(rt.db, victim.id)
    assert shard.status == "failed" and shard.attempts == 2


def test_a_fork_waits_for_the_supervisor_s_sweep_under_way():
    """A worker forks a new pool child while its supervisor thread may hold library locks (in
    SQLAlchemy, the driver, kombu): the fork waits until the sweep under way is over, so no child
    starts with a lock held for ever. Here a sweep holds on until the fork has been asked for."""
    import threading

    from ferqueue.jobs import supervise

    supervise.guard_forks()
    inside, asked, forked, order = threading.Event(), threading.Event(), threading.Event(), []

    def sweep():
        with supervise._quiet:
            inside.set()
            asked.wait(30)
            # the fork cannot complete while the sweep holds the lock
            order.append("fork finished early" if forked.wait(1) else "sweep over")

    def fork():
        asked.set()
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        order.append("forked")
        forked.set()

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    assert inside.wait(30)
    forker = threading.Thread(target=fork)
    forker.start()
    sweeper.join(60)
    forker.join(60)
    assert order == ["sweep over", "forked"]
