"""One Settings object, read from FERQUEUE_* environment variables with embedded defaults.

The embedded default is a single data directory holding a SQLite ledger, the model
artifacts and the adversarial store, with no broker (the local executor).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from ferqueue.errors import ConfigError

NO_BROKER = ("no broker configured: set FERQUEUE_BROKER_URL (e.g. redis://localhost:6379/0) to use Celery "
             "workers")


class _Environment:
    """FERQUEUE_* values of one environment mapping; an empty value counts as unset."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.environ.get(f"FERQUEUE_{name}")
        return value if value not in (None, "") else default

    def integer(self, name: str, default: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"FERQUEUE_{name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    store_root: Path
    artifact_root: Path
    cache_dir: Path
    broker_url: str | None
    result_backend: str | None
    tf_threads: int
    flower_user: str | None
    flower_password: str | None
    visibility_timeout: int
    task_time_limit: int = 6 * 3600
    lease_seconds: int = 60
    supervise_seconds: int = 15
    max_attempts: int = 5
    store_url: str | None = None
    s3_endpoint_url: str | None = None

    @property
    def executor(self) -> str:
        """'celery' when a broker is configured, otherwise the in-process 'local' executor."""
        return "celery" if self.broker_url else "local"

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)

    def require_broker(self, hint: str | None = None) -> str:
        """The broker URL; a ConfigError saying what to set when there is none."""
        if not self.broker_url:
            raise ConfigError(NO_BROKER + (f", or pass {hint} to run the job in this process" if hint else ""))
        return self.broker_url

    def ensure_dirs(self) -> None:
        """Create the data folders; a ConfigError naming the folder when one cannot be made or written."""
        for name, path in (("FERQUEUE_HOME", self.home), ("FERQUEUE_STORE_ROOT", self.store_root),
                           ("FERQUEUE_ARTIFACT_ROOT", self.artifact_root), ("FERQUEUE_CACHE_DIR", self.cache_dir)):
            try:
                path.mkdir(parents=True, exist_ok=True)
            except FileExistsError:
                raise ConfigError(f"{name}: {path} exists and is not a folder") from None
            except OSError as exc:
                raise ConfigError(f"{name}: cannot create the folder {path} ({exc.strerror})") from None
            if not os.access(path, os.W_OK | os.X_OK):
                raise ConfigError(f"{name}: the folder {path} is not writable by this user")


def default_result_backend(broker: str | None) -> str | None:
    """Where task results go unless FERQUEUE_RESULT_BACKEND says: the Redis broker itself, or
    RabbitMQ's reply queues (rpc://) for an AMQP broker, which keeps no results of its own."""
    if broker is not None and broker.startswith(("amqp://", "amqps://", "pyamqp://")):
        return "rpc://"
    return broker


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``environ`` (default: this process's environment)."""
    env = _Environment(os.environ if environ is None else environ)
    home = Path(env.get("HOME", "ferqueue-data")).expanduser().resolve()
    broker = env.get("BROKER_URL")
    lease = env.integer("LEASE_SECONDS", 60)
    if lease < 2:
        raise ConfigError(f"FERQUEUE_LEASE_SECONDS={lease} is too short: a lease is renewed every third of it, "
                          "give at least 2 s")
    settings = Settings(
        home=home,
        database_url=env.get("DATABASE_URL", f"sqlite:///{home / 'ferqueue.db'}"),
        store_root=Path(env.get("STORE_ROOT", str(home / "store"))).expanduser().resolve(),
        artifact_root=Path(env.get("ARTIFACT_ROOT", str(home / "models"))).expanduser().resolve(),
        cache_dir=Path(env.get("CACHE_DIR", str(home / "cache"))).expanduser().resolve(),
        broker_url=broker,
        result_backend=env.get("RESULT_BACKEND", default_result_backend(broker)),
        tf_threads=env.integer("TF_THREADS", 0),
        flower_user=env.get("FLOWER_USER"),
        flower_password=env.get("FLOWER_PASSWORD"),
        visibility_timeout=env.integer("VISIBILITY_TIMEOUT", 90),
        task_time_limit=env.integer("TASK_TIME_LIMIT", 6 * 3600),
        lease_seconds=lease,
        supervise_seconds=env.integer("SUPERVISE_SECONDS", max(1, lease // 4)),
        max_attempts=env.integer("MAX_ATTEMPTS", 5),
        store_url=_store_url(env.get("STORE_URL")),
        s3_endpoint_url=env.get("S3_ENDPOINT_URL"),
    )
    if settings.supervise_seconds < 0:
        raise ConfigError(f"FERQUEUE_SUPERVISE_SECONDS={settings.supervise_seconds} must be 0 (no supervisor) or more")
    if settings.max_attempts < 1:
        raise ConfigError(f"FERQUEUE_MAX_ATTEMPTS={settings.max_attempts} must be at least 1")
    return settings


def _store_url(url: str | None) -> str | None:
    """An object-store URL (s3://bucket[/prefix]) without a trailing slash; None keeps the folders."""
    if url is None:
        return None
    if not url.startswith("s3://") or not url[len("s3://"):].strip("/"):
        raise ConfigError(f"FERQUEUE_STORE_URL={url!r} is not an object-store URL: expected s3://bucket[/prefix]")
    return url.rstrip("/")
