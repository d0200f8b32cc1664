"""Throwaway server instances and network namespaces, for tests and benchmarks that must stand
in for a deployment on several machines.

Each server (PostgreSQL, Redis, RabbitMQ, moto's S3 server) runs from its own folder, bound to
an address and port of its own, so it can be stopped and restarted without touching the
machine's own services. ``Hosts`` makes network namespaces joined by a bridge: the root
namespace is the "server host" at ``.1``, each namespace a machine at ``.2``, ``.3``...,
reaching the servers only over the network. Linux only; root for namespaces and PostgreSQL
(which then runs as the ``postgres`` user).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from ferqueue.cluster import wait_for


def port_free(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port_on(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Server:
    """A server process started from ``argv`` in its own session, logging to ``log``."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, root: Path, host: str, port: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port or free_port_on(host)
        self.process: subprocess.Popen | None = None
        self.log = self.root / f"{self.name}.log"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str] | None:
        return None

    def start(self, timeout: float = 60) -> Server:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            env=self.env(),
                                            start_new_session=True)
        wait_for(self.ready, timeout, f"{self.name} on {self.host}:{self.port}",
                 logs=lambda: self.log.read_text(errors="replace")[-3000:])
        return self

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited ({self.process.returncode}):\n"
                               + self.log.read_text(errors="replace")[-3000:])
        return answers(self.host, self.port)

    def stop(self, timeout: float = 60) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, self.stop_signal)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        wait_for(lambda: port_free(self.host, self.port) or not answers(self.host, self.port), 30,
                 f"{self.name}'s port {self.port} to close")

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()


class RedisServer(Server):
    """redis-server with an append-only file, so that its queues outlive a restart."""

    name = "redis"

    def argv(self) -> list[str]:
        return ["redis-server", "--bind", self.host, "--port", str(self.port), "--dir", str(self.root),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
                "--protected-mode", "no"]

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"


class PostgresServer(Server):
    """A PostgreSQL cluster of its own (initdb), trust authentication, fsync off; run as the
    postgres user when this process is root (PostgreSQL refuses root)."""

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown: clients' sessions are ended, not waited for

    def __init__(self, root: Path | None = None, host: str = "127.0.0.1", port: int | None = None):
        # under /tmp, not a test's folder: the postgres user must reach it
        root = Path(tempfile.mkdtemp(prefix="ferqueue-pg-")) if root is None else Path(root)
        super().__init__(root, host, port)
        self.data = self.root / "data"
        self.bin = _postgres_bin()
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
            os.chmod(self.root, 0o700)
        if not self.data.exists():
            self._as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                               "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
            with open(self.data / "pg_hba.conf", "a") as hba:  # the namespace hosts connect over the bridge
                hba.write("host all all 0.0.0.0/0 trust\n")

    def _as_postgres(self, argv: list[str], **kwargs):
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, **kwargs)

    def argv(self) -> list[str]:
        argv = [str(self.bin / "postgres"), "-D", str(self.data), "-h", self.host, "-p", str(self.port),
                "-k", str(self.root), "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=200"]
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if found:
        return found[-1].parent
    which = shutil.which("postgres")
    if which:
        return Path(which).parent
    raise FileNotFoundError("no PostgreSQL server binary (postgres) is installed")


class RabbitServer(Server):
    """A RabbitMQ node of its own (its own node name, ports, database and logs), guest allowed
    from any address, so that namespace hosts reach it and it can be restarted alone."""

    name = "rabbitmq"

    def __init__(self, root: Path | None = None, host: str = "127.0.0.1", port: int | None = None):
        # under /tmp, not a test's folder: rabbitmq-server started by root runs as the rabbitmq user
        root = Path(tempfile.mkdtemp(prefix="ferqueue-rabbitmq-")) if root is None else Path(root)
        super().__init__(root, host, port)
        if os.geteuid() == 0:
            shutil.chown(self.root, "rabbitmq")
        self.node = f"fq{secrets.token_hex(3)}@localhost"
        self.dist_port = free_port_on("127.0.0.1")
        (self.root / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = {host}:{self.port}\nloopback_users = none\n"
            "consumer_timeout = 86400000\nmanagement_agent.disable_metrics_collector = true\n")
        (self.root / "enabled_plugins").write_text("[].\n")
        if os.geteuid() == 0:
            for path in self.root.iterdir():
                shutil.chown(path, "rabbitmq")

    def env(self) -> dict[str, str]:
        return {**os.environ, "RABBITMQ_NODENAME": self.node, "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_CONFIG_FILE": str(self.root / "rabbitmq"),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.root / "enabled_plugins"),
                "RABBITMQ_MNESIA_BASE": str(self.root / "mnesia"), "RABBITMQ_LOG_BASE": str(self.root / "log"),
                "RABBITMQ_PID_FILE": str(self.root / "rabbitmq.pid")}

    def argv(self) -> list[str]:
        return ["rabbitmq-server"]

    def ready(self) -> bool:
        if not super().ready():
            return False
        return self.ctl("await_startup", timeout=30).returncode == 0

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", "-n", self.node, *args], env=self.env(), capture_output=True,
                              text=True, timeout=timeout)

    def stop(self, timeout: float = 60) -> None:
        if self.process is not None and self.process.poll() is None:
            self.ctl("stop", timeout=timeout)
        super().stop(timeout)

    def url(self, vhost: str = "") -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/{vhost}"

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class MotoServer(Server):
    """moto's standalone S3-protocol server, in a process of its own."""

    name = "moto"

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def create_bucket(self, name: str) -> None:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=name)


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class Hosts:
    """Network namespaces as machines: a bridge with ``prefix.1`` in the root namespace (where the
    servers listen) and one namespace per host at ``prefix.2``, ``prefix.3``... ``prefix`` is the
    first three numbers of a /24 (e.g. "10.77.0"). ``wrap(name, argv)`` runs a command there."""

    def __init__(self, count: int, prefix: str = "10.77.0"):
        self.tag = secrets.token_hex(2)
        self.prefix = prefix
        self.bridge = f"fqbr{self.tag}"
        self.names = [f"fq{self.tag}h{i}" for i in range(count)]
        self.address = f"{prefix}.1"
        self._made: list[tuple[str, str]] = []
        try:
            self._ip("link", "add", self.bridge, "type", "bridge")
            self._made.append(("link", self.bridge))
            self._ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
            self._ip("link", "set", self.bridge, "up")
            for i, name in enumerate(self.names):
                self._ip("netns", "add", name)
                self._made.append(("netns", name))
                outer, inner = f"fq{self.tag}v{i}", f"fq{self.tag}p{i}"
                self._ip("link", "add", outer, "type", "veth", "peer", "name", inner)
                self._made.append(("link", outer))
                self._ip("link", "set", inner, "netns", name)
                self._ip("link", "set", outer, "master", self.bridge)
                self._ip("link", "set", outer, "up")
                self._ip("-n", name, "addr", "add", f"{self.host_address(i)}/24", "dev", inner)
                self._ip("-n", name, "link", "set", inner, "up")
                self._ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    def host_address(self, i: int) -> str:
        return f"{self.prefix}.{i + 2}"

    @staticmethod
    def _ip(*args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def hostname(self, i: int) -> str:
        return f"{self.names[i]}"

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        """``argv`` run on host ``i``: in its network namespace, under a hostname of its own (a UTS
        namespace), as on another machine (the process id stays the one started)."""
        return ["ip", "netns", "exec", self.names[i], "unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"',
                self.hostname(i), *argv]

    def close(self) -> None:
        for what, name in reversed(self._made):
            subprocess.run(["ip", what, "del", name], capture_output=True)
        self._made.clear()


def namespaces_refused() -> str | None:
    """Why network namespaces cannot be made here (None when they can)."""
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    name = f"fqprobe{secrets.token_hex(2)}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if done.returncode != 0:
        return f"`ip netns add` is refused here: {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None

