"""Clusters of real Celery worker processes for the integration tests, on ferqueue.cluster.

A test ``Cluster`` is a ``LocalCluster`` on a Redis database that this test session claimed
for itself (so concurrent sessions never share a queue); a timeout fails the test with the
workers' logs, and every worker is stopped and the Redis database flushed at the end.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fq_helpers import service_unavailable

from ferqueue.cluster import FERQUEUE, ClusterTimeout, LocalCluster

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("FERQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_CLAIM = "ferqueue:test-redis-db:{}"

__all__ = ["FERQUEUE", "REPO", "Cluster", "claim_redis_db"]


def claim_redis_db() -> tuple[str, Callable[[], None]]:
    """A Redis database (1-15) that no other cluster or test session holds: (url, release)."""
    import redis

    admin = redis.Redis.from_url(REDIS_URL)
    try:
        admin.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        service_unavailable(f"Redis at {REDIS_URL}", exc)
    token = uuid.uuid4().hex
    for number in range(1, 16):
        if admin.set(_CLAIM.format(number), token, nx=True, ex=3 * 3600):
            break
    else:
        pytest.fail("every Redis database 1-15 is claimed by other test sessions")
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    url = f"{base}/{number}"
    redis.Redis.from_url(url).flushdb()

    def release() -> None:
        redis.Redis.from_url(url).flushdb()
        if admin.get(_CLAIM.format(number)) == token.encode():
            admin.delete(_CLAIM.format(number))

    return url, release


class Cluster(LocalCluster):
    """A ferqueue deployment in a temporary folder: settings, its own Redis database, workers."""

    def __init__(self, root: Path, database_url: str, **extra_env: str):
        self.broker_url, self._release = claim_redis_db()
        super().__init__(root, {
            "FERQUEUE_HOME": str(root / "home"),
            "FERQUEUE_DATABASE_URL": database_url,
            "FERQUEUE_BROKER_URL": self.broker_url,
            "FERQUEUE_RESULT_BACKEND": self.broker_url,
            "FERQUEUE_TF_THREADS": "1",
            **extra_env,
        }, cwd=REPO)
        self.flush()

    def use(self, monkeypatch) -> None:
        """Point this test process (CLI calls, Runtime()) at the cluster."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    def redis(self):
        import redis

        return redis.Redis.from_url(self.broker_url)

    def flush(self) -> None:
        self.redis().flushdb()

    def start_worker(self, queues: str = "generate,train,evaluate", concurrency: int = 1, via_cli: bool = False,
                     **kwargs):
        """A worker through the plain `celery -A` command line, or (``via_cli``) `ferqueue worker`."""
        if not via_cli:
            kwargs["argv"] = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E", "-Q",
                              queues, "-c", str(concurrency), "-n", "{node}", "-l", "info"]
        return super().start_worker(queues=queues, concurrency=concurrency, **kwargs)

    def stop(self) -> None:
        super().stop()
        self._release()

    def wait(self, predicate, timeout: float, what: str, interval: float = 0.25):
        try:
            return super().wait(predicate, timeout, what, interval)
        except ClusterTimeout as exc:
            pytest.fail(str(exc))
