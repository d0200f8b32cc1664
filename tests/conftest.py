"""Shared fixtures: real SQLite files, a real PostgreSQL database, a trained tiny model.

Services: tests marked `postgres`/`redis` skip when the local server is unreachable, unless
FERQUEUE_REQUIRE_SERVICES=1 (set by .ci/run), where an unreachable server is a failure.
"""

from __future__ import annotations

import os
import uuid

import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from fq_helpers import SHARED, service_unavailable  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("FERQUEUE_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("FERQUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_SERVICES = os.environ.get("FERQUEUE_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    """No FERQUEUE_* setting of the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("FERQUEUE_") and not key.startswith("FERQUEUE_TEST_") and key != "FERQUEUE_REQUIRE_SERVICES":
            monkeypatch.delenv(key)
    if (SHARED / "keras").is_dir():
        monkeypatch.setenv("KERAS_HOME", str(SHARED / "keras"))


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Embedded defaults under a fresh FERQUEUE_HOME (left set, so CLI calls share it)."""
    from ferqueue.config import load_settings

    monkeypatch.setenv("FERQUEUE_HOME", str(tmp_path / "home"))
    return load_settings()


@pytest.fixture
def rt(settings):
    from ferqueue.runtime import Runtime

    return Runtime(settings)


@pytest.fixture(scope="session")
def postgres_url():
    """A fresh PostgreSQL database for this test session, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"ferqueue_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "no server"
        service_unavailable("PostgreSQL at " + POSTGRES_ADMIN_URL, exc)
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    yield url
    from ferqueue.db.session import dispose_engines

    dispose_engines()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_settings(settings, postgres_url):
    """Settings pointing at the session's PostgreSQL database, emptied before each test."""
    from sqlalchemy import text

    from ferqueue.db.session import get_engine

    with get_engine(postgres_url).begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    return settings.with_overrides(database_url=postgres_url)


@pytest.fixture(scope="session")
def synthetic_small():
    from ferqueue.data import load_dataset

    return load_dataset("synthetic:420", 32)


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory, synthetic_small):
    """A tiny CNN trained on synthetic faces, saved as an artifact file (path, sha256)."""
    from ferqueue.models import build_model, save_model
    from ferqueue.train import TrainConfig, train_model

    built = build_model("tiny_cnn", len(synthetic_small.class_names), 32, weights="random", seed=0)
    train_model(built.model, synthetic_small.images, synthetic_small.labels,
                TrainConfig(epochs=20, batch_size=16, lr=3e-3, seed=0))
    path, sha = save_model(built.model, tmp_path_factory.mktemp("models"), "tiny")
    return path, sha, built.num_params
