"""The schema is made by Alembic migrations, identically on SQLite and PostgreSQL."""

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from ferqueue.db.session import Database, open_database
from ferqueue.db.tables import Base
from ferqueue.errors import ConfigError

VERSIONS = Path(__file__).resolve().parents[2] / "ferqueue" / "db" / "migrations" / "versions"
TABLES = {"experiments", "datasets", "splits", "model_artifacts", "jobs", "shards", "training_runs", "evaluations"}


def _assert_matches_models(db: Database):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"migrations and models disagree: {diff}"


def test_sqlite_upgrade_creates_schema_matching_models(settings):
    db = open_database(settings.database_url)
    assert TABLES <= set(db.table_names())
    newest = max(p.name[:4] for p in VERSIONS.glob("[0-9][0-9][0-9][0-9]_*.py"))
    assert db.current_revision() == Database.head_revision() == newest
    _assert_matches_models(db)
    db.migrate()  # idempotent
    assert db.current_revision() == newest


@pytest.mark.postgres
def test_postgres_upgrade_creates_schema_matching_models(pg_settings):
    db = open_database(pg_settings.database_url)
    assert TABLES <= set(db.table_names())
    _assert_matches_models(db)
    uniques = {tuple(u["column_names"]) for u in inspect(db.engine).get_unique_constraints("shards")}
    assert ("job_id", "index") in uniques


def test_downgrade_to_base_and_back(settings):
    from alembic import command

    from ferqueue.db.session import alembic_config

    db = open_database(settings.database_url)
    command.downgrade(alembic_config(db.url), "base")
    assert not (TABLES & set(db.table_names()))
    db.migrate()
    assert TABLES <= set(db.table_names())


def test_unmigrated_database_is_refused(settings):
    with pytest.raises(ConfigError, match="ferqueue db upgrade"):
        open_database(settings.database_url, migrate=False)


def test_check_constraints_reject_unknown_states(settings):
    from sqlalchemy.exc import IntegrityError

    from ferqueue.db import ledger

    db = open_database(settings.database_url)
    job = ledger.create_job(db, "generate", {})
    with pytest.raises(IntegrityError), db.session() as s:
        from sqlalchemy import update

        from ferqueue.db.tables import JobRow

        s.execute(update(JobRow).where(JobRow.id == job.id).values(status="exploded"))


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_training_mode_of_the_vocabulary_is_accepted_and_no_other(backend, request, synthetic_small):
    """The ledger's check constraint on a run's mode follows the vocabulary (migration 0004
    added the robust modes), on both databases."""
    from sqlalchemy.exc import IntegrityError

    from ferqueue.db import ledger
    from ferqueue.vocabulary import TRAINING_MODES

    settings = request.getfixturevalue("settings" if backend == "sqlite" else "pg_settings")
    from ferqueue.data import make_split

    db = open_database(settings.database_url)
    ds_row = ledger.register_dataset(db, synthetic_small)
    split_row = ledger.register_split(db, ds_row.id, make_split(synthetic_small, "random", seed=1))
    rows = {"dataset_id": ds_row.id, "split_id": split_row.id, "architecture": "tiny_cnn", "params": {}}
    for mode in TRAINING_MODES:
        job = ledger.create_job(db, "train", {})
        assert ledger.run_for_job(db, job.id, mode=mode, **rows).mode == mode
    job = ledger.create_job(db, "train", {})
    with pytest.raises(IntegrityError):
        ledger.run_for_job(db, job.id, mode="bogus", **rows)
