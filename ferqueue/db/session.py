"""Engines, sessions and the schema's migrations (shipped in ferqueue/db/migrations).

Sessions are opened only inside ``ferqueue.db``; records leave it frozen (ferqueue.db.domain).
Upgrades run under a lock, so concurrent first commands on a fresh database cannot race:
a PostgreSQL advisory lock, or a file lock beside a SQLite database.
"""

from __future__ import annotations

import fcntl
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, DBAPIError, NoSuchModuleError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ferqueue.errors import ConfigError, ServiceError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_ADVISORY_KEY = 0x6665_7271  # "ferq": the PostgreSQL advisory lock that serialises upgrades

# a writer waits this long for SQLite's write lock before the database reports it locked
SQLITE_BUSY_SECONDS = 30
_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer (CLI watching workers)
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
    cursor.close()


def safe_url(url: str) -> str:
    """A database URL with its password masked (also in a URL SQLAlchemy cannot parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL: mask whatever sits where a password would
        return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def get_engine(url: str) -> Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            path = _sqlite_path(url)
            try:
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
                    event.listen(engine, "connect", _sqlite_pragmas)
                else:
                    engine = create_engine(url, pool_pre_ping=True)
            except ArgumentError:
                raise ConfigError(f"FERQUEUE_DATABASE_URL {safe_url(url)!r} is not a database URL "
                                  "(e.g. sqlite:////path/ferqueue.db or postgresql+psycopg2://user@host/db)") from None
            except (NoSuchModuleError, ModuleNotFoundError) as exc:
                raise ConfigError(f"FERQUEUE_DATABASE_URL {safe_url(url)}: no driver for it is installed ({exc}); "
                                  "ferqueue supports SQLite and PostgreSQL") from None
            except OSError as exc:
                raise ConfigError(f"FERQUEUE_DATABASE_URL {safe_url(url)}: cannot create {path.parent} "
                                  f"({exc.strerror})") from None
            _engines[url] = engine
        return engine


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """A database that cannot be reached or read as one ServiceError naming it (password masked)."""
    try:
        yield
    except OperationalError as exc:
        reason = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise ServiceError(f"database {safe_url(url)} cannot be reached or opened: {reason}") from None
    except DatabaseError as exc:
        reason = " ".join(str(exc.orig).split()) if exc.orig is not None else str(exc)
        raise ServiceError(f"database {safe_url(url)} is not usable: {reason}") from None


def database_error(exc: DBAPIError) -> str:
    """One line for a database error met while a command works: the driver's message without
    SQLAlchemy's statement and parameters, and what to do where there is something to do."""
    reason = " ".join(str(exc.orig if exc.orig is not None else exc).split())
    if "database is locked" in reason:
        return (f"the ledger is locked: another process has held SQLite's write lock for over {SQLITE_BUSY_SECONDS} s "
                "(a stopped or stuck ferqueue process?); try again, and use PostgreSQL for many workers at once")
    return f"database error: {reason} (`ferqueue --debug ...` shows the statement)"


def dispose_engines() -> None:
    """Drop pooled connections; a forked worker child must not reuse its parent's sockets."""
    with _lock:
        for engine in _engines.values():
            engine.dispose(close=False)
        _engines.clear()


class Database:
    """The ledger: a URL plus a session factory."""

    def __init__(self, url: str):
        self.url = url
        self.engine = get_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def _upgrade_lock(self) -> Iterator[None]:
        path = _sqlite_path(self.url)
        if path is not None:
            with open(path.with_name(path.name + ".migrate.lock"), "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                yield
            return
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_KEY})
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_KEY})
            return
        yield

    def migrate(self) -> None:
        """alembic upgrade head, one process at a time (idempotent)."""
        from alembic import command

        with self._upgrade_lock():
            if self.current_revision() != self.head_revision():
                command.upgrade(alembic_config(self.url), "head")

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head_revision() -> str:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

    def check_schema(self) -> None:
        """Refuse to work on a database that is not migrated to head."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise ConfigError(f"database {self.safe_url} is at revision {current or 'none'}, this ferqueue expects "
                              f"{head}: run `ferqueue db upgrade`")

    @property
    def safe_url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def run_environment() -> None:
    """What Alembic's env.py does (both ferqueue/db/migrations/env.py and the repository's
    migrations/env.py call this): run the migrations on the URL the caller gave, or on the
    FERQUEUE_* settings' database."""
    from logging.config import fileConfig

    from alembic import context

    from ferqueue.db.tables import Base

    config = context.config
    if config.config_file_name is not None and config.attributes.get("configure_logger", True):
        fileConfig(config.config_file_name)
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from ferqueue.config import load_settings

        url = load_settings().database_url
    # render_as_batch lets ALTERs run on SQLite too (it copies the table)
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    with get_engine(url).connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


def open_database(url: str, migrate: bool = True) -> Database:
    """The ledger at ``url``, upgraded to the code's schema (``migrate``) or checked to be at it;
    a database that is unreachable, missing or not a database is one clear error."""
    db = Database(url)
    with reaching(url):
        if migrate:
            db.migrate()
        else:
            db.check_schema()
    return db
