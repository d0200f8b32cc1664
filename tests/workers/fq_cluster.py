"""Real Celery worker processes on the local Redis, for the integration tests.

A ``Cluster`` is a ferqueue home, a database URL and a Redis database that this test session
claimed for itself (so concurrent sessions never share a queue), plus the worker processes
started on them. Workers run in their own session (process group), so a test can SIGKILL a
whole worker, and every worker is stopped and the Redis database flushed at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
FERQUEUE = str(Path(PYTHON).with_name("ferqueue"))
REDIS_URL = os.environ.get("FERQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_CLAIM = "ferqueue:test-redis-db:{}"


def _unavailable(what: str, exc: Exception) -> None:
    # as tests/conftest.py: a failure under FERQUEUE_REQUIRE_SERVICES=1 (CI), else a skip
    if os.environ.get("FERQUEUE_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is required (FERQUEUE_REQUIRE_SERVICES=1) but unreachable: {exc}")
    pytest.skip(f"{what} unreachable: {exc}")


def claim_redis_db() -> tuple[str, Callable[[], None]]:
    """A Redis database (1-15) that no other cluster or test session holds: (url, release)."""
    import redis

    admin = redis.Redis.from_url(REDIS_URL)
    try:
        admin.ping()
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        _unavailable(f"Redis at {REDIS_URL}", exc)
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


class Cluster:
    """A ferqueue deployment in a temporary folder: settings, Redis and worker processes."""

    def __init__(self, root: Path, database_url: str, **extra_env: str):
        self.root = root
        self.broker_url, self._release = claim_redis_db()
        broker_url = self.broker_url
        self.env = {
            "FERQUEUE_HOME": str(root / "home"),
            "FERQUEUE_DATABASE_URL": database_url,
            "FERQUEUE_BROKER_URL": broker_url,
            "FERQUEUE_RESULT_BACKEND": broker_url,
            "FERQUEUE_TF_THREADS": "1",
            **extra_env,
        }
        self.workers: list[subprocess.Popen] = []
        self.logs: dict[int, Path] = {}
        self.flush()

    # -- settings and the test process -------------------------------------------------------

    def use(self, monkeypatch) -> None:
        """Point this test process (CLI calls, Runtime()) at the cluster."""
        for key, value in self.env.items():
            monkeypatch.setenv(key, value)

    @property
    def settings(self):
        from ferqueue.config import load_settings

        with pytest.MonkeyPatch.context() as mp:
            self.use(mp)
            return load_settings()

    def runtime(self):
        from ferqueue.runtime import Runtime

        return Runtime(self.settings)

    def redis(self):
        import redis

        return redis.Redis.from_url(self.broker_url)

    def flush(self) -> None:
        self.redis().flushdb()

    # -- worker processes ------------------------------------------------------------------------

    def process_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERQUEUE_") or k.startswith("FERQUEUE_TEST")}
        env.update(self.env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start_worker(self, queues: str = "generate,train,evaluate", concurrency: int = 1,
                     via_cli: bool = False) -> tuple[subprocess.Popen, str]:
        """Start a worker and wait until it answers a ping; returns (process, node name)."""
        node = f"w{len(self.workers)}-{uuid.uuid4().hex[:8]}@localhost"
        if via_cli:
            argv = [FERQUEUE, "worker", "--queues", queues, "--concurrency", str(concurrency), "--hostname", node]
        else:
            argv = [PYTHON, "-m", "celery", "-A", "workers.celery_app", "worker", "-E", "-Q", queues,
                    "-c", str(concurrency), "-n", node, "-l", "info"]
        log = self.root / f"{node.split('@')[0]}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=REPO, env=self.process_env(), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.workers.append(proc)
        self.logs[proc.pid] = log
        app = self.app()
        self.wait(lambda: proc.poll() is None and app.control.ping(destination=[node], timeout=0.5),
                  60, f"worker {node} to answer a ping")
        return proc, node

    def app(self):
        from workers.celery_app import app_for

        return app_for(self.settings)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a whole worker (main process and pool children)."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        for proc in self.workers:
            try:
                self.kill(proc, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:  # leftover pool children of a worker killed outright
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._release()

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}" for path in self.logs.values())

    # -- waiting -----------------------------------------------------------------------------------

    def wait(self, predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.25):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tail()}")

    def wait_for_job(self, rt, job_id: int, timeout: float = 180):
        """The job's row once it is finished (done, failed or cancelled)."""
        from ferqueue import ledger
        from ferqueue.db.models import Job

        def finished():
            job = ledger.get(rt.db, Job, job_id)
            return job if job.status in ("done", "failed", "cancelled") else None

        return self.wait(finished, timeout, f"job {job_id} to finish", interval=0.5)
