"""Concurrent users of one ledger, settled by the database: four processes that start together
on a fresh database (migrations, registrations, experiment names), and four `ferqueue run`s at
once, on SQLite and on PostgreSQL."""

from __future__ import annotations

import multiprocessing
import os
import subprocess

import pytest
from fq_helpers import REPO

from ferqueue.cluster import FERQUEUE

N = 4


def _register_together(database_url: str, home: str, barrier, out) -> None:
    """One user: open the ledger (migrating a fresh one), register the same dataset, split and
    model file, and make an experiment with the default name, all at the same moment as the others."""
    os.environ.update(FERQUEUE_HOME=home, FERQUEUE_DATABASE_URL=database_url)
    from ferqueue import app
    from ferqueue.db import ledger

    barrier.wait()
    rt = app.open_runtime(write=True)
    ds_row, split_row = app.dataset_and_split(rt, "synthetic:70", 32, "random")
    artifact = ledger.register_artifact(rt.db, architecture="tiny_cnn", path="m.keras", sha256="ab" * 32,
                                        num_params=1, image_size=32, class_names=["a", "b"], weights="random",
                                        size_bytes=1)
    exp = app.experiment(rt, None, "same-second")
    out.put((ds_row.id, split_row.id, artifact.id, exp.id, exp.name))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, settings):
    if request.param == "postgres":
        return request.getfixturevalue("pg_settings").database_url
    return settings.database_url


def test_users_starting_together_on_a_fresh_database_share_rows_but_not_experiments(database_url, settings):
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(N), context.Queue()
    users = [context.Process(target=_register_together, args=(database_url, str(settings.home), barrier, out))
             for _ in range(N)]
    for user in users:
        user.start()
    for user in users:
        user.join(120)
    assert [user.exitcode for user in users] == [0] * N, "a user crashed (see its traceback above)"
    rows = [out.get(timeout=5) for _ in range(N)]
    assert len({r[0] for r in rows}) == len({r[1] for r in rows}) == len({r[2] for r in rows}) == 1, \
        "one dataset, one split and one artifact row, whoever inserted first"
    assert len({r[3] for r in rows}) == len({r[4] for r in rows}) == N, "each user has an experiment of its own"


def test_four_runs_at_once_all_finish_with_their_own_experiments(database_url, settings):
    from ferqueue.db import queries
    from ferqueue.db.session import open_database

    env = {k: v for k, v in os.environ.items() if not k.startswith("FERQUEUE_")}
    env.update(FERQUEUE_HOME=str(settings.home), FERQUEUE_DATABASE_URL=database_url, FERQUEUE_TF_THREADS="1",
               TF_CPP_MIN_LOG_LEVEL="3")
    argv = [FERQUEUE, "run", "--dataset", "synthetic:70", "--image-size", "32", "--epochs", "1", "--adv-epochs", "1",
            "--eps", "0.02", "--no-pgd", "--pixel-queries", "0", "--eval-limit", "8", "--shard-size", "64",
            "--weights", "random"]
    runs = [subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(N)]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0 and "Traceback" not in output, output
    db = open_database(database_url, migrate=False)
    rows = queries.results(db)
    experiments = {r["experiment"] for r in rows}
    assert len(experiments) == N, experiments
    for name in experiments:  # two models (baseline, hardened) x (clean, FGSM) each, nobody else's
        mine = [r for r in rows if r["experiment"] == name]
        assert len(mine) == 4 and len({r["artifact_id"] for r in mine}) == 2
