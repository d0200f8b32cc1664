"""Flower as a person and as Prometheus see it: `ferqueue flower` with basic auth, a real worker
and a small generation job (two shards and the merge) on the local Redis; the pages opened in
headless Chromium, the metrics scraped with the credentials."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fq_browser import chromium, wait_for_text
from fq_cluster import Cluster
from fq_helpers import register_tiny
from prometheus_client.parser import text_string_to_metric_families

from ferqueue import jobs
from ferqueue.cli import main
from ferqueue.db import ledger
from ferqueue.jobs import GenerateSpec
from ferqueue.queue import CeleryExecutor

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def watched(tmp_path_factory, synthetic_small, tiny_model_file):
    """A worker, Flower, and a generation job Flower saw from start to end: (cluster, flower,
    worker node, job, shards)."""
    root = tmp_path_factory.mktemp("flower")
    cluster = Cluster(root, f"sqlite:///{root / 'ferqueue.db'}")
    try:
        rt = cluster.runtime()
        ds_row, split_row, _split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
        _proc, node = cluster.start_worker(concurrency=1)
        flower = cluster.start_flower()
        # Flower lists only the events it receives: wait until it has the worker's heartbeat
        cluster.wait(lambda: f'flower_worker_online{{worker="{node}"}} 1.0' in flower.get("/metrics")[1], 60,
                     "Flower to receive the worker's events")
        job = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                         attacks=["fgsm:eps=0.03"], shard_size=100, limit=200))
        CeleryExecutor(rt).submit(job.id)
        assert cluster.wait_for_job(rt, job.id).status == "done"

        def all_seen():
            tasks = json.loads(flower.get("/api/tasks")[1] or "{}").values()
            return sum(t["state"] == "SUCCESS" and f"'job_id': {job.id}" in (t.get("kwargs") or "")
                       for t in tasks) == 3

        cluster.wait(all_seen, 60, "Flower to see the job's three tasks succeed")
        yield cluster, flower, node, job, ledger.shards(rt.db, job.id)
    finally:
        cluster.stop()


def test_flower_in_a_browser_shows_the_worker_and_each_tasks_job_and_shard(watched, tmp_path):
    _cluster, flower, node, job, shards = watched
    assert len(shards) == 2
    for path in ("/", "/workers", "/tasks", "/api/tasks"):
        assert flower.get(path, auth=False)[0] == 401, f"{path} answers without credentials"
    signed_in = f"http://{flower.user}:{flower.password}@127.0.0.1:{flower.port}"
    with chromium(tmp_path / "chromium") as browser:
        browser.get(f"{signed_in}/workers")
        # the worker's name may wrap in its cell
        wait_for_text(browser, lambda text: node in text.replace("\n", "") and "Online" in text,
                      f"worker {node} online")
        browser.save_screenshot(str(tmp_path / "flower-workers.png"))

        browser.get(f"{signed_in}/tasks")
        shard_rows = [f"ferqueue.generate_shard {{'job_id': {job.id}, 'shard_id': {s.id}}} SUCCESS" for s in shards]
        merge_row = f"ferqueue.merge_store {{'job_id': {job.id}}} SUCCESS"
        wait_for_text(browser, lambda text: all(row in text for row in (*shard_rows, merge_row)),
                      "every task of the job with its job and shard")
        rows = [r.text for r in browser.find_elements("css selector", "#tasks-table tbody tr")]
        assert sum(row.startswith(tuple(shard_rows)) for row in rows) == 2, rows
        assert browser.find_elements("css selector", "th[data-column='kwargs']"), "the list has a kwargs column"
        browser.save_screenshot(str(tmp_path / "flower-tasks.png"))
    for shot in ("flower-workers.png", "flower-tasks.png"):
        assert (tmp_path / shot).stat().st_size > 10_000


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_flower_and_ferqueue_metrics_count_the_job(watched, monkeypatch):
    cluster, flower, node, job, shards = watched
    status, body = flower.get("/metrics")
    assert status == 200
    flower_series = _samples(body)

    def events(task: str, kind: str) -> float:
        return flower_series[("flower_events_total", (("task", task), ("type", kind), ("worker", node)))]

    assert events("ferqueue.generate_shard", "task-succeeded") == 2
    assert events("ferqueue.merge_store", "task-succeeded") == 1
    assert flower_series[("flower_worker_online", (("worker", node),))] == 1

    cluster.use(monkeypatch)
    ours = _samples(CliRunner().invoke(main, ["metrics"], catch_exceptions=False).output)
    assert ours[("ferqueue_jobs", (("kind", "generate"), ("status", "done")))] == 1
    assert ours[("ferqueue_shards", (("kind", "generate"), ("status", "done")))] == 2
    assert ours[("ferqueue_shard_attempts_total", (("kind", "generate"),))] == 2
