"""One job across hosts that share nothing but the network: two workers in network namespaces
(veth pairs on a bridge), each with its own FERQUEUE_HOME and no shared folder, reaching Redis,
PostgreSQL and an S3 server (moto's) that listen only on the bridge's address. The dataset's
folder is deleted once registered: the workers load its uploaded cache."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fq_cluster import REPO
from fq_helpers import service_unavailable, write_face_folder

from ferqueue import app, jobs
from ferqueue.cluster import LocalCluster
from ferqueue.db import ledger
from ferqueue.jobs import EvaluateSpec, GenerateSpec
from ferqueue.objects import copy_into
from ferqueue.queue import CeleryExecutor
from ferqueue.servers import CREDENTIALS, Hosts, MotoServer, PostgresServer, RedisServer, namespaces_refused

pytestmark = pytest.mark.netns
BUCKET = "ferqueue-hosts"


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    """Two namespace hosts, and Redis, PostgreSQL and moto bound to the bridge's address only."""
    refused = namespaces_refused()
    if refused:
        pytest.skip(f"no network namespaces here, so no second host: {refused}")
    root = tmp_path_factory.mktemp("network")
    made = []
    try:
        hosts = Hosts(2, prefix=f"10.77.{random.randint(100, 250)}")
        made.append(hosts)
        redis = RedisServer(root / "redis", hosts.address).start()
        made.append(redis)
        postgres = PostgresServer(host=hosts.address).start()
        made.append(postgres)
        moto = MotoServer(root / "moto", hosts.address).start()
        made.append(moto)
        moto.create_bucket(BUCKET)
    except (OSError, RuntimeError) as exc:
        for thing in reversed(made):
            thing.close()
        service_unavailable("servers on a namespace bridge", exc)
    yield hosts, redis, postgres, moto
    for thing in reversed(made):
        thing.close()


def _namespace_pids(name: str) -> set[int]:
    done = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    return {int(p) for p in done.stdout.split()}


def test_a_job_runs_across_hosts_that_share_only_the_network(network, tmp_path, tiny_model_file, monkeypatch):
    hosts, redis, postgres, moto = network
    for key, value in CREDENTIALS.items():  # this process is the submitting machine
        monkeypatch.setenv(key, value)
    env = {"FERQUEUE_DATABASE_URL": postgres.create_database("hosts"), "FERQUEUE_BROKER_URL": redis.url(0),
           "FERQUEUE_RESULT_BACKEND": redis.url(1), "FERQUEUE_STORE_URL": f"s3://{BUCKET}/run",
           "FERQUEUE_S3_ENDPOINT_URL": moto.endpoint, "FERQUEUE_TF_THREADS": "1", **CREDENTIALS}
    cluster = LocalCluster(tmp_path / "submitter", {**env, "FERQUEUE_HOME": str(tmp_path / "submitter-home")}, cwd=REPO)
    try:
        rt = cluster.runtime()  # the submitting machine (the root namespace) migrates the ledger
        folder = write_face_folder(tmp_path / "faces")
        dataset, ds_row = app.load_registered(rt, str(folder), 32)
        split_row = app.dataset_and_split(rt, str(ds_row.id), 32, "random")[1]
        model, sha, params = tiny_model_file
        artifact = ledger.register_artifact(
            rt.db, architecture="tiny_cnn", path=copy_into(rt.objects.models, model, f"tiny-{sha[:12]}.keras"),
            sha256=sha, num_params=params, image_size=32, class_names=list(dataset.class_names),
            weights="random", size_bytes=Path(model).stat().st_size)
        shutil.rmtree(folder)
        homes = [tmp_path / f"host{i}-home" for i in range(2)]
        celery = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E", "-Q",
                  "generate,evaluate", "-c", "1", "-n", "{node}", "-l", "info"]
        for i, home in enumerate(homes):
            cluster.start_worker(name=f"host{i}-", argv=celery, host=hosts.wrap(i, []), timeout=120,
                                 env={"FERQUEUE_HOME": str(home)})

        generation = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                                attacks=["pixel:k=1,method=random,queries=60"], shard_size=8))
        executor = CeleryExecutor(rt)
        executor.submit(generation.id)
        done = cluster.wait_for_job(rt, generation.id, timeout=300)
        assert done.status == "done", f"{done.error}\n{cluster.log_tail()}"
        evaluation = jobs.plan(rt, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                                attacks=["fgsm:eps=0.03"], transfer_store_job_id=generation.id,
                                                shard_size=6))
        executor.submit(evaluation.id)
        evaluated = cluster.wait_for_job(rt, evaluation.id, timeout=300)
        assert evaluated.status == "done", f"{evaluated.error}\n{cluster.log_tail()}"

        # every shard ran in one of the two namespaces, and each host did some
        shards = ledger.shards(rt.db, generation.id) + ledger.shards(rt.db, evaluation.id)
        pids = [_namespace_pids(name) for name in hosts.names]
        ran = [int(s.worker.rsplit(":", 1)[1]) for s in shards]
        assert all(any(pid in p for p in pids) for pid in ran), "no shard ran outside the hosts"
        assert all(any(pid in p for pid in ran) for p in pids), "both hosts ran shards"
        # no shared folder: each host kept what it wrote and fetched, nothing else is common
        for home in homes:
            assert not (home / "cache" / "faces").exists()
            assert any(p.suffix == ".npy" for p in (home / "cache").iterdir()), "the dataset came from the object store"
        # the merged store, read on the submitting machine, holds every planned example once, in order
        _job, store = rt.finished_store(generation.id)
        key = store.attacks[0]
        train = rt.split(rt.dataset(ds_row), split_row).train
        np.testing.assert_array_equal(store.read(key, ("source_index",))["source_index"], train)
        assert done.merge_count == 1 and {r["setting"] for r in _evaluations(rt, evaluated)} == {"clean", "whitebox",
                                                                                                  "transfer"}
    finally:
        cluster.stop()


def _evaluations(rt, job):
    from ferqueue.db.queries import results

    return [r for r in results(rt.db) if r["evaluation_id"] in job.result["evaluation_ids"]]

