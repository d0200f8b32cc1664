"""Every error a user can cause through the command line: a non-zero exit, one clear line that
names the value or file, no traceback (unless --debug), nothing stored. Each case runs the real
`ferqueue` in its own process, with the environment a user would have set."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess

import pytest
from fq_helpers import REPO

from ferqueue.cluster import FERQUEUE


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def _ferqueue(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("FERQUEUE_")}
    return subprocess.run([FERQUEUE, *args], cwd=REPO, env={**base, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
                          capture_output=True, text=True, timeout=300)


def _home_is_a_file(tmp_path):
    (tmp_path / "home").write_text("not a folder")
    return {"FERQUEUE_HOME": str(tmp_path / "home")}, "FERQUEUE_HOME"


def _home_not_writable(tmp_path):
    """A folder nobody may write, root included (the tests run as root, whom modes do not stop):
    immutable, undone by the fixture below."""
    home = tmp_path / "locked"
    home.mkdir()
    if subprocess.run(["chattr", "+i", str(home)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here to make a folder that root cannot write")
    return {"FERQUEUE_HOME": str(home)}, f"{home} is not writable"


@pytest.fixture(autouse=True)
def _mutable_again(tmp_path):
    yield
    locked = tmp_path / "locked"
    if locked.exists():
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)


def _database_not_a_database(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 100)
    return {"FERQUEUE_HOME": str(tmp_path / "h"), "FERQUEUE_DATABASE_URL": f"sqlite:///{path}"}, "notes.db"


CASES = {
    # the environment
    "home is a file": (_home_is_a_file, ["results"]),
    "home not writable": (_home_not_writable, ["results"]),
    "database URL garbage": (lambda t: ({"FERQUEUE_DATABASE_URL": "garbage"}, "garbage"), ["results"]),
    "database on a closed port": (lambda t: ({"FERQUEUE_DATABASE_URL": f"postgresql+psycopg2://u:pw1@127.0.0.1:"
                                                                        f"{_closed_port()}/x"}, "cannot be reached"),
                                  ["db", "upgrade"]),
    "database driver missing": (lambda t: ({"FERQUEUE_DATABASE_URL": "mysql://u:pw1@127.0.0.1/x"}, "no driver"),
                                ["results"]),
    "database missing": (lambda t: ({"FERQUEUE_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:5432/"
                                                              "ferqueue_no_such_db"}, "ferqueue_no_such_db"),
                         ["db", "upgrade"]),
    "database file not a database": (_database_not_a_database, ["db", "upgrade"]),
    "store outside the store root": (lambda t: ({}, "/etc/passwd"), ["store", "show", "/etc/passwd"]),
    "unknown job": (lambda t: ({}, "no job with id 999"), ["status", "999"]),
    "unknown experiment": (lambda t: ({}, "nonesuch"), ["results", "--experiment", "nonesuch"]),
    # values
    "epsilon out of range": (lambda t: ({}, "1.5"), ["run", "--eps", "0.01,1.5"]),
    "shard size 0": (lambda t: ({}, "--shard-size must be at least 1, got 0"), ["run", "--shard-size", "0"]),
    "one-pixel k larger than the image": (lambda t: ({}, "k 100000 exceeds"), ["run", "--attack", "pixel:k=100000"]),
    "epochs 0": (lambda t: ({}, "epochs 0 would record an untrained tiny_cnn"), ["run", "--epochs", "0"]),
    "unknown model": (lambda t: ({}, "resnet50"), ["run", "--models", "resnet50"]),
    "flower open to all without auth": (lambda t: ({"FERQUEUE_BROKER_URL": "redis://127.0.0.1:6379/15"}, "0.0.0.0"),
                                        ["flower", "--no-auth", "--address", "0.0.0.0"]),
}


@pytest.mark.parametrize("case", CASES)
def test_a_user_error_is_one_clear_line(case, tmp_path):
    make, args = CASES[case]
    env, expect = make(tmp_path)
    env = {"FERQUEUE_HOME": str(tmp_path / "home"), **env}
    if args[0] not in ("db", "run", "flower") and "FERQUEUE_DATABASE_URL" not in env and case != "home is a file" \
            and case != "home not writable":
        assert _ferqueue(["db", "upgrade"], env).returncode == 0  # a ledger to read, as a user would have
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    result = _ferqueue(args, env)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, output
    assert "Traceback" not in output and len(output.splitlines()) == 1, output
    assert expect in output, output
    assert "pw1" not in output, "a password reached the output"
    if args[0] == "run":
        db = tmp_path / "home" / "ferqueue.db"
        if db.exists():
            with sqlite3.connect(db) as con:
                assert con.execute("select count(*) from jobs").fetchone()[0] == 0, "a refused run recorded a job"
    else:
        after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
        assert set(before) <= set(after), "nothing that was there is lost"


def test_debug_shows_the_traceback(tmp_path):
    result = _ferqueue(["--debug", "results"], {"FERQUEUE_DATABASE_URL": "garbage"})
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_info_masks_every_password(tmp_path):
    result = _ferqueue(["info"], {"FERQUEUE_HOME": str(tmp_path), "FERQUEUE_BROKER_URL": "redis://:brokerpw@h:6379/0",
                                  "FERQUEUE_DATABASE_URL": "postgresql+psycopg2://u:dbpw@h/x"})
    assert result.returncode == 0, result.stderr
    assert "brokerpw" not in result.stdout and "dbpw" not in result.stdout
    assert "redis://:**@h:6379/0" in result.stdout and "postgresql+psycopg2://u:***@h/x" in result.stdout


def test_a_locked_ledger_is_one_line_that_says_so(settings, monkeypatch):
    """A process stopped inside a write holds SQLite's write lock: a command that must write
    waits the busy timeout, then says so in one line (not SQLAlchemy's statement)."""
    from click.testing import CliRunner

    from ferqueue.cli import main
    from ferqueue.db import ledger, session
    from ferqueue.runtime import Runtime

    monkeypatch.setattr(session, "SQLITE_BUSY_SECONDS", 1)
    rt = Runtime(settings)
    job = ledger.create_job(rt.db, "generate", {})
    holder = sqlite3.connect(rt.db.engine.url.database)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = CliRunner().invoke(main, ["cancel", str(job.id)])
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: the ledger is locked: another process has held SQLite's write lock for over 1 s (a stopped or stuck "
        "ferqueue process?); try again, and use PostgreSQL for many workers at once"]
    assert ledger.job(rt.db, job.id).status == "pending", "nothing changed"
