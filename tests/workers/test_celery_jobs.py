"""Jobs on real Celery worker processes against the local Redis (and, for the fault tests, the
local RabbitMQ too), with SQLite and PostgreSQL ledgers.

Each test checks the merged store example by example: exactly the planned source indices, in
order, once each, whatever happened to workers or broker on the way.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fq_cluster import BROKERS, FERQUEUE
from fq_helpers import run_shards
from sqlalchemy import select

from ferqueue import jobs
from ferqueue.db import ledger
from ferqueue.db.domain import Job
from ferqueue.db.tables import JobRow
from ferqueue.jobs import GenerateSpec, Unit
from ferqueue.queue import CeleryExecutor

pytestmark = pytest.mark.redis

LIMIT = 144  # three shards of 48
SLOW_PIXEL = "pixel:k=1,method=random,queries=150"  # about 3 s per shard of 48 images here


def _plan(cluster, rt, attacks, shard_size=48, limit=None):
    return jobs.plan(rt, GenerateSpec(artifact_id=cluster.artifact.id, dataset_id=cluster.ds_row.id,
                                      split_id=cluster.split_row.id, attacks=attacks, shard_size=shard_size,
                                      limit=limit))


def _cli(*args):
    from ferqueue.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def assert_store_exact(cluster, rt, job_id: int, limit: int | None = None) -> Job:
    """The job is done, merged once, and its store holds each expected example once, in order."""
    job = ledger.job(rt.db, job_id)
    assert job.status == "done", f"job {job_id} is {job.status}: {job.error}\n{cluster.log_tail()}"
    assert job.merge_count == 1
    expected = cluster.split.train[:limit]
    _job, store = rt.finished_store(job_id)  # also checks the recorded sha256
    for key in store.attacks:
        part = store.read(key, ("source_index", "labels"))
        np.testing.assert_array_equal(part["source_index"], expected)
        np.testing.assert_array_equal(part["labels"], cluster.labels[expected])
    assert job.result["n_examples"] == len(expected) * len(store.attacks)
    recorded = {Path(s.path).name for s in ledger.shards(rt.db, job_id)} | {Path(job.store_path).name}
    left = {p.name for p in rt.store_dir(job_id).iterdir()}
    assert left == recorded, "only the recorded shard and store files remain: no half-written or surplus file"
    return job


def _generate_on_workers(cluster, rt) -> None:
    job = _plan(cluster, rt, ["fgsm:eps=0.02", "pixel:k=1,method=random,queries=20"])
    executor = CeleryExecutor(rt)
    task_ids = executor.submit(job.id)
    assert len(task_ids) == job.n_shards == 2 * 7
    cluster.wait_for_job(rt, job.id)
    done = assert_store_exact(cluster, rt, job.id)
    shards = ledger.shards(rt.db, job.id)
    assert all(s.status == "done" and s.attempts == 1 and s.worker and s.started_at and s.finished_at
               and s.seconds > 0 for s in shards)
    outcomes = [executor.app.AsyncResult(t).get(timeout=30) for t in task_ids]
    assert sum("finish_task" in o for o in outcomes) == 1, "the merge is enqueued exactly once"
    assert done.result["shard_seconds"] > 0


def test_generate_job_completes_on_workers_sqlite(shared_cluster):
    _generate_on_workers(shared_cluster, shared_cluster.runtime())


@pytest.mark.postgres
def test_generate_job_completes_on_workers_postgres(make_cluster, pg_settings):
    cluster = make_cluster(pg_settings.database_url)
    rt = cluster.runtime()
    assert rt.db.engine.dialect.name == "postgresql"
    cluster.start_worker(queues="generate", concurrency=2, via_cli=True)
    _generate_on_workers(cluster, rt)


def _frozen_mid_shard(rt, job_id: int, attempts: int = 1):
    """A running shard's pool child, stopped while the ledger still says the shard is running
    (its ``attempts``-th attempt): whatever the machine's speed, a kill then lands between the
    shard's start and its record. (shard, child pid), or None (the caller waits for the next shard)."""
    running = [s for s in ledger.shards(rt.db, job_id) if s.status == "running" and s.attempts == attempts]
    if not running:
        return None
    child = int(running[0].worker.rsplit(":", 1)[1])
    os.kill(child, signal.SIGSTOP)
    if ledger.shard(rt.db, running[0].id).status == "running":
        return running[0], child
    os.kill(child, signal.SIGCONT)  # it finished before it stopped
    return None


@pytest.mark.parametrize("broker", BROKERS)
def test_worker_child_killed_mid_shard_is_redone_without_duplicates(make_cluster, broker):
    cluster = make_cluster(broker=broker)
    rt = cluster.runtime()
    worker, _node = cluster.start_worker(queues="generate", concurrency=1)
    job = _plan(cluster, rt, [SLOW_PIXEL], limit=LIMIT)
    CeleryExecutor(rt).submit(job.id)

    victim, child_pid = cluster.wait(lambda: _frozen_mid_shard(rt, job.id), 150, "a shard to run")
    assert child_pid != worker.pid, "the shard runs in a pool child"
    os.kill(child_pid, signal.SIGKILL)
    cluster.wait_for_job(rt, job.id)
    assert_store_exact(cluster, rt, job.id, limit=LIMIT)
    redone = ledger.shard(rt.db, victim.id)
    assert redone.attempts >= 2 and redone.worker != victim.worker
    assert worker.poll() is None, "the worker survived the loss of its child"


@pytest.mark.parametrize("broker", BROKERS)
def test_broker_flushed_mid_job_is_completed_by_resume(make_cluster, monkeypatch, broker):
    # no supervisor: what brings the lost shard back here is `ferqueue resume`
    cluster = make_cluster(broker=broker, FERQUEUE_SUPERVISE_SECONDS="0")
    cluster.use(monkeypatch)
    rt = cluster.runtime()
    first, _ = cluster.start_worker(queues="generate", concurrency=1)
    job = _plan(cluster, rt, ["fgsm:eps=0.01", SLOW_PIXEL], limit=LIMIT)
    CeleryExecutor(rt).submit(job.id)

    def some_done_one_running(rows):
        return sum(s.status == "done" for s in rows) >= 4 and any(s.status == "running" for s in rows)

    def frozen_with_one_running():
        if not some_done_one_running(ledger.shards(rt.db, job.id)):
            return False
        os.killpg(first.pid, signal.SIGSTOP)  # the whole worker stops; what the ledger says now holds
        if some_done_one_running(ledger.shards(rt.db, job.id)):
            return True
        os.killpg(first.pid, signal.SIGCONT)
        return False

    cluster.wait(frozen_with_one_running, 150, "four shards done and one running")
    lost = [s.id for s in ledger.shards(rt.db, job.id) if s.status == "running"]
    cluster.kill(first)  # SIGKILL the whole worker: the running shard is lost with it
    cluster.flush()  # the broker loses every queued and unacked message
    store = Path(rt.store_dir(job.id))
    (store / ".shard-00005-killed.h5.tmp").write_bytes(b"half an HDF5 file")  # what a kill mid-write leaves
    (store / "shard-00099-0123456789ab.h5").write_bytes(b"a file the ledger never recorded")
    _proc, node = cluster.start_worker(queues="generate", concurrency=1, via_cli=True)
    inspect = cluster.app().control.inspect(destination=[node], timeout=2)
    assert cluster.queued("generate") == 0 and not any((inspect.active() or {}).values()), \
        "nothing is queued or running any more"
    assert ledger.job(rt.db, job.id).status == "running"

    result = _cli("resume", job.id)
    unfinished = [s for s in ledger.shards(rt.db, job.id) if s.status != "done"]
    assert f"re-enqueued {len(unfinished)} tasks" in result.output
    cluster.wait_for_job(rt, job.id)
    assert_store_exact(cluster, rt, job.id, limit=LIMIT)
    assert all(ledger.shard(rt.db, shard_id).attempts == 2 for shard_id in lost)


def test_two_merges_at_once_merge_once(shared_cluster, monkeypatch):
    from workers import tasks

    cluster = shared_cluster
    cluster.use(monkeypatch)
    rt = cluster.runtime()
    job = _plan(cluster, rt, ["fgsm:eps=0.01"], shard_size=64)
    assert run_shards(rt, job.id).units == [Unit("generate", job.id)], "the last shard claimed the merge"
    executor = CeleryExecutor(rt)
    sent = [executor.dispatch(Unit("generate", job.id))[0] for _ in range(2)]  # two worker children take one each
    outcomes = [executor.app.AsyncResult(t).get(timeout=120) for t in sent]
    assert sum("n_examples" in o for o in outcomes) == 1, outcomes
    assert_store_exact(cluster, rt, job.id)
    # redelivered shard tasks of the finished job change nothing
    before = [(s.path, s.attempts) for s in ledger.shards(rt.db, job.id)]
    again = [executor.app.send_task("ferqueue.generate_shard", args=[job.id, s.id], queue="generate")
             for s in ledger.shards(rt.db, job.id)]
    assert {r.get(timeout=60)["status"] for r in again} == {"skipped"}
    assert [(s.path, s.attempts) for s in ledger.shards(rt.db, job.id)] == before
    assert_store_exact(cluster, rt, job.id)

    # the task body itself, run by threads at the same moment in this process
    second = _plan(cluster, rt, ["fgsm:eps=0.01"], shard_size=64)
    assert run_shards(rt, second.id).units == [Unit("generate", second.id)]
    barrier, results = threading.Barrier(4), []

    def merge():
        barrier.wait()
        results.append(tasks.finish(second.id))

    try:
        threads = [threading.Thread(target=merge) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        from workers.celery_app import reset_runtime

        reset_runtime()
    assert sum("n_examples" in r for r in results) == 1, results
    assert_store_exact(cluster, rt, second.id)


def test_pipeline_runs_on_the_queues_and_status_watch_follows_it(shared_cluster, monkeypatch):
    cluster = shared_cluster
    cluster.use(monkeypatch)
    result = _cli("submit", "pipeline", "--dataset", "synthetic:140", "--image-size", 32, "--epochs", 1,
                  "--adv-epochs", 1, "--eps", "0.02", "--pixel-queries", 0, "--weights", "random",
                  "--eval-limit", 20, "--shard-size", 50, "--experiment", "on-workers", "-q")
    assert result.exit_code == 0, result.output
    pipeline_id = int(result.output.strip())
    watched = subprocess.run([FERQUEUE, "status", str(pipeline_id), "--watch", "--interval", "0.5"],
                             env=cluster.process_env(), capture_output=True, text=True, timeout=300)
    assert watched.returncode == 0, watched.stdout + watched.stderr + cluster.log_tail()
    assert f"job {pipeline_id}: pipeline, done" in watched.stdout and "5/5 steps" in watched.stdout
    rt = cluster.runtime()
    children = ledger.children(rt.db, pipeline_id)
    assert [c.step for c in children] == ["train-tiny_cnn-standard", "evaluate-tiny_cnn-standard",
                                          "generate-tiny_cnn", "train-tiny_cnn-offline_adv",
                                          "evaluate-tiny_cnn-offline_adv"]
    assert all(c.status == "done" and c.executor == "celery" for c in children)
    generate = children[2]
    assert generate.merge_count == 1 and generate.n_shards == 3
    from ferqueue.db.queries import results

    rows = results(rt.db, ledger.find_experiment(rt.db, "on-workers").id)
    assert {r["mode"] for r in rows} == {"standard", "offline_adv"} and all(r["n"] == 20 for r in rows)


def test_compare_submitted_to_workers_waits_and_prints_the_side_by_side_tables(shared_cluster, monkeypatch):
    from ferqueue.db.queries import comparison

    cluster = shared_cluster
    cluster.use(monkeypatch)
    result = _cli("compare", "--submit", "--dataset", "synthetic:140", "--image-size", 32, "--epochs", 1,
                  "--eps", "0.02", "--pixel-queries", 0, "--no-pgd", "--weights", "random", "--eval-limit", 20,
                  "--shard-size", 50, "--experiment", "cmp-on-workers")
    assert result.exit_code == 0, result.output + cluster.log_tail()
    assert "submitted" in result.output and "compute (summed over folds)" in result.output
    rt = cluster.runtime()
    exp = ledger.find_experiment(rt.db, "cmp-on-workers")
    with rt.db.session() as s:
        pipeline = s.scalars(select(JobRow).where(JobRow.kind == "compare", JobRow.experiment_id == exp.id)).one()
    children = ledger.children(rt.db, pipeline.id)
    assert pipeline.status == "done" and all(c.status == "done" and c.executor == "celery" for c in children)
    table = comparison(rt.db, exp.id)
    assert table["modes"] == ["standard", "offline_adv", "online_fgsm"]
    compute = {c["mode"]: c for c in table["compute"]}
    assert compute["offline_adv"]["generation_seconds"] > 0 and compute["standard"]["generation_seconds"] == 0
    # the same tables again from the ledger alone
    again = _cli("results", "--experiment", "cmp-on-workers", "--compare")
    assert again.exit_code == 0 and "online_fgsm" in again.output and "transfer" in again.output


def test_cancel_stops_a_job_and_resume_finishes_it(shared_cluster, monkeypatch):
    cluster = shared_cluster
    cluster.use(monkeypatch)
    rt = cluster.runtime()
    job = _plan(cluster, rt, [SLOW_PIXEL], limit=LIMIT)
    CeleryExecutor(rt).submit(job.id)
    frozen: list[int] = []

    def frozen_with_work_left():
        """The workers stopped while a shard runs and another waits: nothing can finish while
        the job is cancelled, whatever the machine's speed. The pool children are found when
        they are stopped (a worker replaces a child after MAX_TASKS_PER_CHILD tasks), after
        their parent, which can then start no other."""
        rows = ledger.shards(rt.db, job.id)
        if not any(s.status == "running" for s in rows):
            return False
        for worker in cluster.workers:
            os.kill(worker.pid, signal.SIGSTOP)
            frozen.append(worker.pid)
            for child in _children(worker.pid):
                os.kill(child, signal.SIGSTOP)
                frozen.append(child)
        if any(s.status in ("pending", "running") for s in ledger.shards(rt.db, job.id)) and _writable(rt.db):
            return True
        _resume_processes(frozen)  # done already, or a process was stopped inside a write to SQLite's ledger
        return False

    cluster.wait(frozen_with_work_left, 120, "a running shard")
    try:
        cancelled = _cli("cancel", job.id)
        assert cancelled.exit_code == 0 and "jobs and shards cancelled" in cancelled.output, cancelled.output
    finally:
        _resume_processes(frozen)
    app, queue = cluster.app(), cluster.redis()

    def drained():  # every queued task has run as a no-op and nothing is held
        held = CeleryExecutor(rt, app).in_flight()
        return queue.llen("generate") == 0 and not held

    cluster.wait(drained, 120, "the cancelled job's tasks to drain")
    assert ledger.job(rt.db, job.id).status == "cancelled"
    assert {s.status for s in ledger.shards(rt.db, job.id)} <= {"cancelled", "done"}
    assert "cancelled" in {s.status for s in ledger.shards(rt.db, job.id)}

    assert "reopened 1 jobs" in _cli("resume", job.id).output
    cluster.wait_for_job(rt, job.id)
    assert_store_exact(cluster, rt, job.id, limit=LIMIT)


def _writable(db) -> bool:
    """No other process holds SQLite's write lock now (a process stopped inside a write would
    hold it until it runs again); PostgreSQL takes row locks, so is always writable here."""
    if db.engine.dialect.name != "sqlite":
        return True
    con = sqlite3.connect(db.engine.url.database, timeout=0)
    try:
        con.execute("BEGIN IMMEDIATE")
        con.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        con.close()


def _resume_processes(pids: list[int]) -> None:
    while pids:
        try:
            os.kill(pids.pop(), signal.SIGCONT)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _small_job(cluster, rt) -> Job:
    job = _plan(cluster, rt, ["fgsm:eps=0.03"], shard_size=200)
    CeleryExecutor(rt).submit(job.id)
    return cluster.wait_for_job(rt, job.id)


def test_tensorflow_lives_in_the_pool_children_only(shared_cluster):
    assert _small_job(shared_cluster, shared_cluster.runtime()).status == "done"
    worker = shared_cluster.workers[0]

    def maps(pid: int) -> str:
        return Path(f"/proc/{pid}/maps").read_text()

    assert "tensorflow" not in maps(worker.pid), "the worker's main process must never import TensorFlow"
    assert any("tensorflow" in maps(child) for child in _children(worker.pid))


@pytest.mark.parametrize("broker", BROKERS)
def test_an_evaluation_shard_killed_mid_run_is_redone_and_aggregated_once(make_cluster, broker):
    from ferqueue.db.queries import results

    cluster = make_cluster(broker=broker)
    rt = cluster.runtime()
    worker, _node = cluster.start_worker(queues="evaluate", concurrency=1)
    n_test = len(cluster.split.test)
    job = jobs.plan(rt, jobs.EvaluateSpec(artifact_id=cluster.artifact.id, dataset_id=cluster.ds_row.id,
                                          split_id=cluster.split_row.id, attacks=[SLOW_PIXEL], shard_size=30))
    CeleryExecutor(rt).submit(job.id)
    victim, child_pid = cluster.wait(lambda: _frozen_mid_shard(rt, job.id), 150, "an evaluation shard to run")
    os.kill(child_pid, signal.SIGKILL)
    done = cluster.wait_for_job(rt, job.id)
    assert done.status == "done", f"{done.error}\n{cluster.log_tail()}"
    assert ledger.shard(rt.db, victim.id).attempts >= 2 and worker.poll() is None
    rows = results(rt.db)
    assert sorted((r["setting"], r["attack_key"]) for r in rows) == [("clean", "none"),
                                                                      ("whitebox", "pixel-random-k1-q150")]
    assert all(r["n"] == n_test for r in rows)
    from ferqueue import app

    seen = [r["source_index"] for r in app.outcomes(rt, job.id, "pixel-random-k1-q150")]
    assert sorted(seen) == sorted(cluster.split.test.tolist()), "every test image once"


def test_an_aggregation_delivered_twice_records_once(shared_cluster, monkeypatch):
    from ferqueue.db.queries import results

    cluster = shared_cluster
    cluster.use(monkeypatch)
    rt = cluster.runtime()
    job = jobs.plan(rt, jobs.EvaluateSpec(artifact_id=cluster.artifact.id, dataset_id=cluster.ds_row.id,
                                          split_id=cluster.split_row.id, attacks=["fgsm:eps=0.02"], shard_size=40))
    assert run_shards(rt, job.id).units == [Unit("evaluate", job.id)], "the last shard claimed the aggregation"
    executor = CeleryExecutor(rt)
    sent = [executor.dispatch(Unit("evaluate", job.id))[0] for _ in range(2)]  # two children take one each
    outcomes = [executor.app.AsyncResult(t).get(timeout=120) for t in sent]
    assert sum(o["status"] == "done" for o in outcomes) == 1, outcomes
    finished = ledger.job(rt.db, job.id)
    assert finished.status == "done" and finished.merge_count == 0
    mine = [r for r in results(rt.db) if r["evaluation_id"] in finished.result["evaluation_ids"]]
    assert sorted((r["setting"], r["attack_key"]) for r in mine) == [("clean", "none"), ("whitebox", "fgsm-eps0.02")]
