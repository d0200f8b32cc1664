"""One Settings object, read from FERQUEUE_* environment variables with embedded defaults.

The embedded default is a single data directory holding a SQLite ledger, the model
artifacts and the adversarial store, with no broker (the local executor).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from ferqueue.errors import ConfigError


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"FERQUEUE_{name}")
    return value if value not in (None, "") else default


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
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
    extra: dict = field(default_factory=dict)

    @property
    def executor(self) -> str:
        """'celery' when a broker is configured, otherwise the in-process 'local' executor."""
        return "celery" if self.broker_url else "local"

    def with_overrides(self, **changes) -> Settings:
        return replace(self, **changes)

    def ensure_dirs(self) -> None:
        for path in (self.home, self.store_root, self.artifact_root, self.cache_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings() -> Settings:
    home = Path(_env("HOME", "ferqueue-data")).expanduser().resolve()
    database_url = _env("DATABASE_URL", f"sqlite:///{home / 'ferqueue.db'}")
    broker = _env("BROKER_URL")
    return Settings(
        home=home,
        database_url=database_url,
        store_root=Path(_env("STORE_ROOT", str(home / "store"))).expanduser().resolve(),
        artifact_root=Path(_env("ARTIFACT_ROOT", str(home / "models"))).expanduser().resolve(),
        cache_dir=Path(_env("CACHE_DIR", str(home / "cache"))).expanduser().resolve(),
        broker_url=broker,
        result_backend=_env("RESULT_BACKEND", broker),
        tf_threads=_env_int("TF_THREADS", 0),
        flower_user=_env("FLOWER_USER"),
        flower_password=_env("FLOWER_PASSWORD"),
        visibility_timeout=_env_int("VISIBILITY_TIMEOUT", 6 * 3600),
    )
