"""Clusters of real Celery worker processes for the integration tests, on ferqueue.cluster.

A test ``Cluster`` is a ``LocalCluster`` on a broker of its own: a Redis database that this
test session claimed for itself, or a RabbitMQ virtual host made for it (so concurrent
sessions never share a queue); a timeout fails the test with the workers' logs, and every
worker is stopped and the broker emptied (the vhost deleted) at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from fq_helpers import service_unavailable

from ferqueue.cluster import FERQUEUE, ClusterTimeout, LocalCluster

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("FERQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBITMQ_URL = os.environ.get("FERQUEUE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
_CLAIM = "ferqueue:test-redis-db:{}"
# the brokers the fault tests run against
BROKERS = ["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)]

__all__ = ["BROKERS", "FERQUEUE", "REPO", "Cluster", "claim_redis_db"]


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


def make_rabbitmq_vhost() -> tuple[str, Callable[[], None]]:
    """A RabbitMQ virtual host of its own on the local broker, guest allowed: (url, delete)."""
    import kombu

    try:
        with kombu.Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        service_unavailable(f"RabbitMQ at {RABBITMQ_URL}", exc)
    vhost = f"ferqueue-test-{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return RABBITMQ_URL.rstrip("/") + "/" + vhost, lambda: _rabbitmqctl("delete_vhost", vhost)


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        service_unavailable("rabbitmqctl", f"rabbitmqctl {' '.join(args)}: {done.stderr.strip() or done.stdout}")


class Cluster(LocalCluster):
    """A ferqueue deployment in a temporary folder: settings, its own broker (a Redis database,
    or a RabbitMQ vhost with results over rpc://), workers."""

    def __init__(self, root: Path, database_url: str, broker: str = "redis", **extra_env: str):
        self.broker = broker
        backend = {}
        if broker == "redis":
            self.broker_url, self._release = claim_redis_db()
            backend = {"FERQUEUE_RESULT_BACKEND": self.broker_url}
        else:
            self.broker_url, self._release = make_rabbitmq_vhost()
        super().__init__(root, {
            "FERQUEUE_HOME": str(root / "home"),
            "FERQUEUE_DATABASE_URL": database_url,
            "FERQUEUE_BROKER_URL": self.broker_url,
            **backend,
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

    def queued(self, queue: str) -> int:
        """Messages waiting in a queue of the broker (not those a worker holds)."""
        if self.broker == "redis":
            return self.redis().llen(queue)
        import kombu

        with kombu.Connection(self.broker_url) as conn:
            try:
                return conn.default_channel.queue_declare(queue, passive=True).message_count
            except Exception:  # noqa: BLE001 - not declared yet: nothing queued
                return 0

    def flush(self) -> None:
        """The broker loses every queued and unacknowledged message."""
        if self.broker == "redis":
            self.redis().flushdb()
            return
        import kombu

        from ferqueue.queue import queues

        # what a dead worker held went back to its queue when its connection closed: purged too
        with kombu.Connection(self.broker_url) as conn:
            for name in queues():
                channel = conn.channel()
                try:
                    channel.queue_purge(name)
                except Exception:  # noqa: BLE001 - not declared yet: nothing to purge
                    pass
                finally:
                    channel.close()

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
