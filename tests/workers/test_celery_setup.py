"""The Celery app's settings, the queue commands' answers to bad input, the local fallback and
docker-compose.yml's commands run here without Docker. No Redis needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fq_cluster import REPO
from fq_helpers import register_tiny

from ferqueue.db import ledger
from ferqueue.db.tables import JobRow as Job
from ferqueue.errors import ConfigError


def _cli(*args, env=None):
    from ferqueue.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], env=env, catch_exceptions=False)


def test_tasks_name_their_job_and_shard_and_held_work_is_known_by_them():
    from ferqueue.jobs import Unit
    from ferqueue.queue import held_key

    shard, merge = Unit("generate", 7, 31), Unit("generate", 7)
    assert shard.kwargs == {"job_id": 7, "shard_id": 31} and merge.kwargs == {"job_id": 7}
    # what a worker reports of its active and reserved tasks (Request.info)
    assert held_key({"name": shard.task, "args": [], "kwargs": shard.kwargs}) == ("ferqueue.generate_shard", 31)
    assert held_key({"name": merge.task, "args": [], "kwargs": merge.kwargs}) == ("ferqueue.merge_store", 7)
    assert held_key({"name": "ferqueue.generate_shard", "args": [7, 31], "kwargs": {}}) == ("ferqueue.generate_shard", 31)
    assert held_key({"name": "ferqueue.train", "args": [], "kwargs": {}}) is None


def test_celery_settings_are_json_only_late_acked_and_routed(settings):
    from ferqueue.queue import celery_config, queues, routes, task_names
    from workers.tasks import app

    conf = celery_config(settings.with_overrides(broker_url="redis://h:6379/0", result_backend="redis://h:6379/1"))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == conf["result_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"] and conf["worker_prefetch_multiplier"] == 1
    transport = conf["broker_transport_options"]
    assert transport["visibility_timeout"] == settings.visibility_timeout <= 120, \
        "a message a dead worker took comes back within two minutes (leases make a second delivery harmless)"
    assert conf["task_time_limit"] == settings.task_time_limit > conf["task_soft_time_limit"] > 0
    amqp = celery_config(settings.with_overrides(broker_url="amqp://guest:guest@h:5672//", result_backend="rpc://"))
    assert amqp["broker_transport_options"] == {"confirm_publish": True} and amqp["task_acks_late"]
    assert sorted(q.name for q in conf["task_queues"]) == sorted(queues()) == ["evaluate", "generate", "train"]
    assert {name: route["queue"] for name, route in conf["task_routes"].items()} == routes() == {
        "ferqueue.generate_shard": "generate", "ferqueue.merge_store": "generate", "ferqueue.train": "train",
        "ferqueue.evaluate_shard": "evaluate", "ferqueue.aggregate_evaluation": "evaluate"}
    assert set(task_names()) <= set(app.tasks), "the worker registers a task for every unit of every kind"
    assert conf["worker_send_task_events"] and conf["worker_max_tasks_per_child"] > 0
    with pytest.raises(ConfigError, match="FERQUEUE_VISIBILITY_TIMEOUT=5"):
        celery_config(settings.with_overrides(visibility_timeout=5))
    with pytest.raises(ConfigError, match="FERQUEUE_TASK_TIME_LIMIT=60"):
        celery_config(settings.with_overrides(task_time_limit=60))


def test_the_worker_main_process_imports_no_tensorflow():
    code = ("import sys; from workers.celery_app import app; app.loader.import_default_modules(); "
            "import workers.tasks, ferqueue.cli; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'h5py') if m in sys.modules))")
    env = {**os.environ, "FERQUEUE_BROKER_URL": "redis://127.0.0.1:6379/15"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_submit_without_a_broker_says_what_to_set_and_records_nothing(rt):
    result = _cli("submit", "generate", "--artifact", 1, "--dataset", "synthetic:70", "--attack", "fgsm:eps=0.01")
    assert result.exit_code == 1 and "FERQUEUE_BROKER_URL" in result.output and "--local" in result.output
    with rt.db.session() as s:
        assert s.query(Job).count() == 0
    for args in (("worker",), ("flower",), ("resume", 1)):
        assert "FERQUEUE_BROKER_URL" in _cli(*args).output


def test_an_unreachable_broker_is_one_clear_line_and_nothing_is_submitted(rt, monkeypatch):
    monkeypatch.setenv("FERQUEUE_BROKER_URL", "redis://:hunter2@127.0.0.1:1/0")  # nothing listens on port 1
    waiting = ledger.create_job(rt.db, "train", {})
    for args in (("submit", "generate", "--artifact", 1, "--dataset", 1, "--attack", "fgsm:eps=0.01"),
                 ("resume", waiting.id)):
        result = _cli(*args)
        assert result.exit_code == 1 and "unreachable" in result.output, result.output
        assert "hunter2" not in result.output and "redis://:**@127.0.0.1:1/0" in result.output
    with rt.db.session() as s:
        assert [job.id for job in s.query(Job)] == [waiting.id], "the refused submit recorded nothing"


def test_local_submit_status_cancel_and_resume(rt, synthetic_small, tiny_model_file):
    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    common = ("--artifact", artifact.id, "--dataset", ds_row.id, "--split", split_row.id)
    result = _cli("submit", "generate", *common, "--attack", "fgsm:eps=0.01", "--shard-size", 100, "--local", "-q")
    assert result.exit_code == 0, result.output
    job = ledger.job(rt.db, int(result.output.strip().splitlines()[-1]))
    assert job.status == "done" and job.merge_count == 1 and job.n_shards == 4
    shown = _cli("status", job.id).output
    assert f"job {job.id}: generate, done" in shown and "4/4 shards" in shown and "300:336" in shown
    assert _cli("status", job.id, "--watch").exit_code == 0, "a finished job ends the watch at once"

    for bad, message in ((("--image-size", 48), "registered at 32px"), (("--split", 999), "no split with id 999")):
        out = _cli("submit", "generate", "--artifact", artifact.id, "--dataset", ds_row.id, *bad,
                   "--attack", "fgsm:eps=0.01", "--local").output
        assert message in out, out
    planned = _cli("submit", "evaluate", *common, "--attack", "fgsm:eps=0.02", "--limit", 20, "--local", "-q")
    assert ledger.job(rt.db, int(planned.output.strip().splitlines()[-1])).status == "done"

    # cancelled before it ran, then resumed in-process
    from ferqueue import jobs

    second = jobs.plan(rt, jobs.GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                             attacks=["fgsm:eps=0.02"], shard_size=200))
    assert "cancelled" in _cli("cancel", second.id).output
    assert _cli("status", second.id, "--watch").exit_code == 1, "a watch on a cancelled job fails"
    assert _cli("resume", second.id, "--local").exit_code == 0
    assert ledger.job(rt.db, second.id).status == "done"


def test_worker_and_flower_commands(settings, monkeypatch):
    monkeypatch.setenv("FERQUEUE_BROKER_URL", "redis://127.0.0.1:6379/15")
    line = _cli("worker", "--queues", "generate", "--concurrency", 2, "--tf-threads", 1, "--dry-run").output
    assert re.search(r"-m celery -A workers\.celery_app worker -E -Q generate -c 2\b", line), line
    assert "unknown queue gpu" in _cli("worker", "--queues", "generate,gpu").output
    assert "FERQUEUE_FLOWER_USER" in _cli("flower").output, "no Flower without credentials"
    assert "--port=5555" in _cli("flower", "--no-auth", "--dry-run").output
    monkeypatch.setenv("FERQUEUE_FLOWER_USER", "ops")
    monkeypatch.setenv("FERQUEUE_FLOWER_PASSWORD", "a,b")
    assert "','" in _cli("flower", "--dry-run").output
    refused = _cli("flower", "--no-auth", "--address", "0.0.0.0", "--dry-run")
    assert refused.exit_code == 1 and "--no-auth with --address 0.0.0.0" in refused.output


# ---- docker-compose.yml, and its commands run here without Docker ----------------------------

FERQUEUE_SERVICES = ("migrate", "worker-generate", "worker-train", "flower")
GPU_SERVICES = ("worker-generate-gpu", "worker-train-gpu")
# the Compose Specification's JSON schema (compose-spec/compose-spec, schema/compose-spec.json),
# as the npm package dclint 3.1.0 ships it in schemas/compose.schema.json
COMPOSE_SCHEMA = REPO / "tests" / "data" / "compose-spec.json"
# what a .env beside docker-compose.yml holds (docs/distributed.md)
DOT_ENV = {"REDIS_PASSWORD": "r", "POSTGRES_PASSWORD": "p", "FLOWER_USER": "ops", "FLOWER_PASSWORD": "f",
           "FERQUEUE_DATASETS": "/srv/fer/datasets", "FERQUEUE_KERAS_HOME": "/srv/fer/keras"}


@pytest.fixture(scope="module")
def compose():
    yaml = pytest.importorskip("yaml", reason="PyYAML reads docker-compose.yml")
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, ${VAR}, ${VAR:-default}, ${VAR:?error}."""
    def value(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        assert op != ":?", f"{name} is required: {arg}"
        return arg if op == ":-" else ""

    return re.sub(r"\$\$|\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", value, text)


def test_compose_file_is_valid_under_the_compose_specification_schema(compose):
    import json

    import jsonschema
    import yaml

    schema = json.loads(COMPOSE_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    # as written, and as `docker compose --profile gpu config` reads it with a .env
    resolved = yaml.safe_load(_interpolate((REPO / "docker-compose.yml").read_text(), DOT_ENV))
    for shape in (compose, resolved):
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(shape)]
        assert errors == [], "\n".join(errors)
    assert set(GPU_SERVICES) <= set(resolved["services"]), "the gpu profile's services are checked too"
    assert resolved["services"]["worker-generate"]["volumes"][1] == "/srv/fer/datasets:/datasets:ro"
    # the schema does catch a mistake in a GPU reservation
    broken = yaml.safe_load(_interpolate((REPO / "docker-compose.yml").read_text(), DOT_ENV))
    broken["services"]["worker-generate-gpu"]["deploy"]["resources"]["reservations"]["device"] = [{"count": 1}]
    assert [e for e in validator.iter_errors(broken) if "device" in e.message]


def test_compose_gpu_profile_reserves_nvidia_gpus_with_the_gpu_image(compose):
    import tomllib

    services = compose["services"]
    assert {name for name, svc in services.items() if "gpu" in svc.get("profiles", [])} == set(GPU_SERVICES)
    for name in GPU_SERVICES:
        svc = services[name]
        assert svc["image"] == "ferqueue:gpu" and svc["build"] == {"context": ".", "args": {"VARIANT": "gpu"}}
        assert svc["deploy"]["resources"]["reservations"]["devices"] == [
            {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
        assert svc["environment"]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true", "GPU workers share a GPU's memory"
        cpu_twin = services[name.removesuffix("-gpu")]
        assert svc["command"] == cpu_twin["command"] and svc["volumes"] == cpu_twin["volumes"]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in dockerfile and 'gpu) pip install "/app[gpu]"' in dockerfile
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(dep.startswith("tensorflow[and-cuda]") for dep in extras["gpu"])


def test_compose_services_share_one_image_and_environment(compose):
    services = compose["services"]
    assert set(services) == {"redis", "postgres", *FERQUEUE_SERVICES, *GPU_SERVICES}
    base = services["worker-generate"]["environment"]
    for name in (*FERQUEUE_SERVICES, *GPU_SERVICES):
        svc = services[name]
        if name not in GPU_SERVICES:
            assert svc["image"] == "ferqueue:latest" and svc["build"] == "."
        assert svc["environment"].items() >= base.items(), f"{name} lacks the shared environment"
        assert "store:/data" in svc["volumes"] and svc["environment"]["FERQUEUE_HOME"] == "/data"
        # datasets read-only and Keras's folder (ImageNet weights) from the host, at fixed paths
        assert "${FERQUEUE_DATASETS:-./datasets}:/datasets:ro" in svc["volumes"]
        assert "${FERQUEUE_KERAS_HOME:-./keras}:/keras" in svc["volumes"] and svc["environment"]["KERAS_HOME"] == "/keras"
    assert "container_name" not in services["worker-generate"] and "ports" not in services["worker-generate"], \
        "worker-generate must scale with --scale"
    assert "--requirepass" in " ".join(services["redis"]["command"])
    assert "${REDIS_PASSWORD" in base["FERQUEUE_BROKER_URL"] and base["FERQUEUE_DATABASE_URL"].startswith("postgresql")
    assert int(base["FERQUEUE_TASK_TIME_LIMIT"]) >= 3600
    flower = services["flower"]
    assert {"FERQUEUE_FLOWER_USER", "FERQUEUE_FLOWER_PASSWORD"} <= set(flower["environment"])
    assert "--no-auth" not in flower["command"]
    assert flower["ports"] == ["${FLOWER_BIND:-127.0.0.1}:${FLOWER_PORT:-5555}:5555"], "published on loopback only"
    assert services["migrate"]["command"] == ["ferqueue", "db", "upgrade"]
    assert services["worker-generate"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "-Q" not in services["worker-train"]["command"] and "train,evaluate" in services["worker-train"]["command"]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_compose_commands_run_without_docker(compose, backend, settings, request):
    url = settings.database_url if backend == "sqlite" else request.getfixturevalue("pg_settings").database_url
    env = {**os.environ, "FERQUEUE_HOME": str(settings.home), "FERQUEUE_DATABASE_URL": url,
           "FERQUEUE_BROKER_URL": "redis://127.0.0.1:6379/15", "FERQUEUE_FLOWER_USER": "ops",
           "FERQUEUE_FLOWER_PASSWORD": "secret"}
    services = compose["services"]

    def local(name: str) -> list[str]:  # the service's command, with this venv's console script
        program, *args = services[name]["command"]
        return [str(Path(sys.executable).with_name(program)), *args]

    migrate = subprocess.run(local("migrate"), cwd=REPO, env=env, capture_output=True, text=True)
    assert migrate.returncode == 0, migrate.stderr
    from ferqueue.db.session import Database

    Database(url).check_schema()  # at head, as the workers require
    for name, expected in (("worker-generate", "-Q generate"), ("worker-train", "-Q train,evaluate"),
                           ("worker-generate-gpu", "-Q generate"), ("worker-train-gpu", "-Q train,evaluate"),
                           ("flower", "ferqueue.monitor --port=5555 --address=0.0.0.0")):
        shown = subprocess.run([*local(name), "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True)
        assert shown.returncode == 0 and expected in shown.stdout, shown.stdout + shown.stderr
