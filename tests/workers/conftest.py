"""Clusters of real Celery workers on the local Redis, with the tiny model registered."""

from __future__ import annotations

import pytest
from fq_cluster import Cluster
from fq_helpers import register_tiny


def _registered(cluster: Cluster, synthetic_small, tiny_model_file) -> Cluster:
    rt = cluster.runtime()  # the test process migrates; workers only check the schema
    cluster.ds_row, cluster.split_row, cluster.split, cluster.artifact = register_tiny(
        rt, synthetic_small, model_file=tiny_model_file)
    cluster.labels = synthetic_small.labels
    return cluster


@pytest.fixture(scope="module")
def shared_cluster(tmp_path_factory, synthetic_small, tiny_model_file):
    """SQLite ledger and one worker (2 children) on every queue, shared by a module's tests."""
    root = tmp_path_factory.mktemp("shared-cluster")
    cluster = Cluster(root, f"sqlite:///{root / 'ferqueue.db'}")
    try:
        _registered(cluster, synthetic_small, tiny_model_file)
        cluster.start_worker(concurrency=2)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def make_cluster(tmp_path, synthetic_small, tiny_model_file):
    """make_cluster(database_url=None, broker="redis", **FERQUEUE_settings) -> a fresh registered
    Cluster without workers."""
    made: list[Cluster] = []

    def make(database_url: str | None = None, broker: str = "redis", **extra_env: str) -> Cluster:
        root = tmp_path / f"cluster{len(made)}"
        root.mkdir()
        cluster = Cluster(root, database_url or f"sqlite:///{root / 'ferqueue.db'}", broker, **extra_env)
        made.append(cluster)
        return _registered(cluster, synthetic_small, tiny_model_file)

    yield make
    for cluster in made:
        cluster.stop()


@pytest.fixture(scope="module")
def postgres_server(tmp_path_factory):
    """A PostgreSQL server of this module's own (initdb), which a test may stop and start."""
    from fq_helpers import service_unavailable

    from ferqueue.servers import PostgresServer

    try:
        server = PostgresServer().start()
    except (FileNotFoundError, OSError, RuntimeError) as exc:
        service_unavailable("a PostgreSQL server of the tests' own (initdb, postgres)", exc)
    try:
        yield server
    finally:
        server.close()
