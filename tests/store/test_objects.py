"""Store, artifacts and dataset files in an object store (FERQUEUE_STORE_URL=s3://...), through
moto's standalone S3 server in a process of its own: files are written locally, uploaded, then
recorded with their sha256; another home (another host) reads them back, verified."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from fq_helpers import service_unavailable, write_face_folder

from ferqueue import app, jobs
from ferqueue.config import load_settings
from ferqueue.db import ledger
from ferqueue.errors import StoreError
from ferqueue.jobs import EvaluateSpec, GenerateSpec, LocalExecutor
from ferqueue.objects import Area, copy_into
from ferqueue.runtime import Runtime
from ferqueue.servers import CREDENTIALS, MotoServer

BUCKET = "ferqueue-test"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    try:
        server = MotoServer(tmp_path_factory.mktemp("moto"), "127.0.0.1").start()
    except (OSError, RuntimeError) as exc:
        service_unavailable("moto's S3 server (moto[server])", exc)
    server.create_bucket(BUCKET)
    yield server
    server.close()


@pytest.fixture
def s3_env(s3, monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return {"FERQUEUE_STORE_URL": f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", "FERQUEUE_S3_ENDPOINT_URL": s3.endpoint}


def _client(s3):
    import boto3

    return boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")


def test_an_area_uploads_and_reads_back_verified(s3, s3_env, tmp_path):
    url = s3_env["FERQUEUE_STORE_URL"] + "/store"
    here, there = Area(tmp_path / "a", url, s3.endpoint), Area(tmp_path / "b", url, s3.endpoint)
    written = here.local("job-000001/shard-00000-abc.h5")
    written.parent.mkdir(parents=True)
    written.write_bytes(b"shard bytes" * 100)
    from ferqueue.files import fingerprint_file

    sha = fingerprint_file(written)
    assert here.put(written) == "job-000001/shard-00000-abc.h5"
    fetched = there.get("job-000001/shard-00000-abc.h5", sha, written.stat().st_size)
    assert fetched == tmp_path / "b" / "job-000001/shard-00000-abc.h5" and fetched.read_bytes() == written.read_bytes()
    assert there.names("job-000001") == {"shard-00000-abc.h5"}
    # the object is replaced behind the ledger's back: a host without a good copy refuses it
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    _client(s3).put_object(Bucket=bucket, Key=f"{prefix}/job-000001/shard-00000-abc.h5", Body=b"forged")
    third = Area(tmp_path / "c", url, s3.endpoint)
    with pytest.raises(StoreError, match="was altered"):
        third.get("job-000001/shard-00000-abc.h5", sha)
    assert not third.local("job-000001/shard-00000-abc.h5").exists(), "an altered download is not kept"
    here.delete("job-000001/shard-00000-abc.h5")
    with pytest.raises(StoreError, match="missing from the object store"):
        third.get("job-000001/shard-00000-abc.h5", sha)


def test_a_job_written_on_one_host_is_read_and_evaluated_on_another(s3_env, tmp_path, tiny_model_file):
    """Host A registers a folder dataset and a model, generates a store; the folder is then gone.
    Host B, a home of its own, reads the store exactly and evaluates on it: the dataset comes
    from the uploaded cache, the model and every shard from the object store, each verified."""
    database = f"sqlite:///{tmp_path / 'ledger.db'}"

    def host(name: str) -> Runtime:
        return Runtime(load_settings({"FERQUEUE_HOME": str(tmp_path / name), "FERQUEUE_DATABASE_URL": database,
                                      **s3_env}))

    a = host("host-a")
    folder = write_face_folder(tmp_path / "faces")
    dataset, ds_row = app.load_registered(a, str(folder), 32)
    split_row = app.dataset_and_split(a, str(ds_row.id), 32, "random")[1]
    model_path, sha, params = tiny_model_file
    artifact = ledger.register_artifact(
        a.db, architecture="tiny_cnn", path=copy_into(a.objects.models, model_path, f"tiny-{sha[:12]}.keras"),
        sha256=sha, num_params=params, image_size=32, class_names=list(dataset.class_names), weights="random",
        size_bytes=Path(model_path).stat().st_size)
    job = jobs.plan(a, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                    attacks=["fgsm:eps=0.03"], shard_size=16))
    LocalExecutor(a).run(job.id)
    done = ledger.job(a.db, job.id)
    assert done.status == "done" and done.n_shards == 3, done.error
    written = a.finished_store(job.id)[1].read("fgsm-eps0.03", ("images", "source_index"))
    shutil.rmtree(folder)  # the source exists nowhere now: only its uploaded cache

    b = host("host-b")
    assert not (tmp_path / "host-b" / "store").exists() or not any((tmp_path / "host-b" / "store").iterdir())
    _job, store = b.finished_store(job.id)
    read = store.read("fgsm-eps0.03", ("images", "source_index"))
    np.testing.assert_array_equal(read["source_index"], written["source_index"])
    np.testing.assert_array_equal(read["images"], written["images"])  # decoded against B's copy of the dataset
    assert {p.name for p in (tmp_path / "host-b" / "store" / f"job-{job.id:06d}").iterdir()} == \
        {Path(s.path).name for s in ledger.shards(b.db, job.id)} | {Path(done.store_path).name}
    _job, _opened, problems = app.verify_store(b, str(job.id))
    assert problems == []

    evaluation = jobs.plan(b, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                           transfer_store_job_id=job.id, shard_size=20))
    LocalExecutor(b).run(evaluation.id)
    evaluated = ledger.job(b.db, evaluation.id)
    assert evaluated.status == "done", evaluated.error
    assert (tmp_path / "host-b" / "models" / f"tiny-{sha[:12]}.keras").is_file(), "the model was downloaded"
    assert not (tmp_path / "host-b" / "cache" / "faces").exists()
    assert any(p.suffix == ".npy" for p in (tmp_path / "host-b" / "cache").iterdir()), "the dataset cache too"
