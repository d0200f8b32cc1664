"""A cluster of local worker processes: one harness for the tests, the benchmarks and demos.

A ``LocalCluster`` is a set of FERQUEUE_* settings (home, database, broker) and the
``ferqueue worker`` (and ``ferqueue flower``) processes started with them. Each worker runs in its own session
(process group), so a whole worker, pool children included, can be killed at once; each
logs to its own file. Waiting is on a condition, checked every ``interval`` seconds, with a
deadline, and a timeout raises ``ClusterTimeout`` with the tail of every log.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ferqueue.vocabulary import FINAL_JOB_STATES

T = TypeVar("T")
FERQUEUE = str(Path(sys.executable).with_name("ferqueue"))


class ClusterTimeout(AssertionError):
    """A condition the cluster was waiting for did not come true in time."""


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25,
             logs: Callable[[], str] = lambda: "") -> T:
    """The first truthy value of ``predicate()``, polled until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ClusterTimeout(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class Flower:
    """A running ``ferqueue flower`` with basic auth, on 127.0.0.1."""

    process: subprocess.Popen
    port: int
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, auth: bool = True, timeout: float = 5) -> tuple[int, str]:
        """(HTTP status, body) of ``path``, with the credentials unless not ``auth``; status 0
        when nothing answers."""
        request = urllib.request.Request(self.url + path)
        if auth:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, ""
        except OSError:
            return 0, ""


class LocalCluster:
    """Settings plus the worker processes started with them, under ``root`` (logs, home)."""

    def __init__(self, root: Path, env: dict[str, str], cwd: Path | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = dict(env)
        self.cwd = cwd
        self.workers: list[subprocess.Popen] = []
        self.services: list[subprocess.Popen] = []  # Flower
        self.logs: dict[int, Path] = {}

    @property
    def settings(self):
        from ferqueue.config import load_settings

        return load_settings(self.env)

    def runtime(self, migrate: bool = True):
        from ferqueue.runtime import Runtime

        return Runtime(self.settings, migrate=migrate)

    def app(self):
        from ferqueue.queue import app_for

        return app_for(self.settings)

    def process_env(self, **extra: str) -> dict[str, str]:
        """This process's environment without its FERQUEUE_* settings, plus the cluster's."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERQUEUE_") or k.startswith("FERQUEUE_TEST")}
        env.update(self.env)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def start_worker(self, queues: str | None = None, concurrency: int = 1, tf_threads: int | None = None,
                     name: str = "w", timeout: float = 60, loglevel: str = "info",
                     argv: list[str] | None = None, host: list[str] | None = None,
                     env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
        """Start ``ferqueue worker`` (or ``argv``) and wait until it answers a ping: (process, node name).
        ``host``: a command prefix that runs it elsewhere (``ip netns exec NAME``: another
        "machine"); ``env``: settings of its own (its FERQUEUE_HOME)."""
        node = f"{name}{len(self.workers)}-{uuid.uuid4().hex[:8]}@localhost"
        if argv is None:
            argv = [FERQUEUE, "worker", "--concurrency", str(concurrency), "--hostname", node, "--loglevel", loglevel]
            if queues:
                argv += ["--queues", queues]
            if tf_threads is not None:
                argv += ["--tf-threads", str(tf_threads)]
        else:
            argv = [a.replace("{node}", node) for a in argv]
        proc = self.spawn([*(host or []), *argv], node.split("@")[0], **(env or {}))
        self.workers.append(proc)
        app = self.app()
        self.wait(lambda: proc.poll() is None and app.control.ping(destination=[node], timeout=0.5),
                  timeout, f"worker {node} to answer a ping")
        return proc, node

    def start_flower(self, user: str = "ops", password: str = "s3cret", timeout: float = 60) -> Flower:
        """Start ``ferqueue flower`` with basic auth on a free port; returns once its task API
        answers (it has subscribed to the workers' events)."""
        port = free_port()
        proc = self.spawn([FERQUEUE, "flower", "--port", str(port)], f"flower{len(self.services)}",
                          FERQUEUE_FLOWER_USER=user, FERQUEUE_FLOWER_PASSWORD=password)
        self.services.append(proc)
        flower = Flower(proc, port, user, password)
        self.wait(lambda: proc.poll() is None and flower.get("/api/tasks")[0] == 200, timeout,
                  f"Flower on port {port} to answer")
        return flower

    def spawn(self, argv: list[str], name: str, **extra_env: str) -> subprocess.Popen:
        """A process of the cluster in its own session, logging to ``root/<name>.log``."""
        log = self.root / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, cwd=self.cwd, env=self.process_env(**extra_env), stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.logs[proc.pid] = log
        return proc

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a whole worker (main process and pool children) and wait for it to end."""
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        """Stop Flower and every worker; kill what a warm shutdown leaves (pool children of a
        killed worker)."""
        for proc in self.services:
            self.kill(proc, signal.SIGTERM)
        self.services.clear()
        for proc in self.workers:
            try:
                self.kill(proc, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.workers.clear()

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}"
                         for path in self.logs.values() if path.exists())

    def stacks(self, timeout: float = 10) -> None:
        """Have every running worker process (main and pool children) write its threads' Python
        stacks into its log (SIGUSR2, see workers.celery_app), and wait until they are there."""
        sizes = {}
        for proc in self.workers:
            if proc.poll() is None and proc.pid in self.logs:
                sizes[proc.pid] = self.logs[proc.pid].stat().st_size
                os.killpg(proc.pid, signal.SIGUSR2)

        def written():
            return all("most recent call first" in self.logs[pid].read_text(errors="replace")[size:]
                       for pid, size in sizes.items())

        try:
            wait_for(written, timeout, "the workers' stacks")
        except ClusterTimeout:
            pass  # a worker too stuck to answer: its log says so by what is missing

    def failure_report(self) -> str:
        """What a timed-out wait shows: the workers' stacks, then every log's tail."""
        self.stacks()
        return self.log_tail(chars=12000)

    def wait(self, predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
        return wait_for(predicate, timeout, what, interval, self.failure_report)

    def wait_for_job(self, rt, job_id: int, timeout: float = 180, interval: float = 0.25):
        """The job's record once it is finished (done, failed or cancelled)."""
        from ferqueue.db import ledger

        def finished():
            job = ledger.job(rt.db, job_id)
            return job if job.status in FINAL_JOB_STATES else None

        return self.wait(finished, timeout, f"job {job_id} to finish", interval)
