"""Generation, training and evaluation jobs on the local executor, with real files and SQLite."""

import json

import numpy as np
import pytest
from fq_helpers import flip_byte, register_tiny, run_job, run_shards

from ferqueue import jobs
from ferqueue.db import ledger
from ferqueue.db.tables import JobRow
from ferqueue.errors import ConfigError, StoreError
from ferqueue.jobs import EvaluateSpec, GenerateSpec, LocalExecutor, PipelineSpec, TrainSpec, Unit, run_unit


@pytest.fixture
def generated(rt, synthetic_small, tiny_model_file):
    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    job = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.02", "pixel:k=1,method=random,queries=20"], shard_size=64))
    LocalExecutor(rt).run(job.id)
    return ledger.job(rt.db, job.id), split, ds_row, split_row, artifact


def test_generate_job_stores_every_training_example_once_in_order(rt, generated, synthetic_small):
    job, split, _ds, _sr, _art = generated
    n = len(split.train)
    assert job.status == "done" and job.merge_count == 1
    assert job.n_shards == 2 * int(np.ceil(n / 64))
    _job, store = rt.finished_store(job.id)
    assert sorted(store.attacks) == ["fgsm-eps0.02", "pixel-random-k1-q20"]
    for key in store.attacks:
        part = store.read(key, ("images", "labels", "source_index", "l0", "linf"))
        np.testing.assert_array_equal(part["source_index"], split.train)
        np.testing.assert_array_equal(part["labels"], synthetic_small.labels[split.train])
        assert part["images"].dtype == np.float32
    fgsm = store.read("fgsm-eps0.02", ("images", "source_index"))
    clean = synthetic_small.images[split.train]
    assert np.abs(fgsm["images"] - clean).max() == pytest.approx(0.02, abs=1e-6)
    assert np.all(store.read("pixel-random-k1-q20", ("l0",))["l0"] == 1)
    assert job.result["n_examples"] == 2 * n


def test_rerunning_a_finished_job_changes_nothing(rt, generated):
    job, *_ = generated
    before = [(s.path, s.sha256, s.attempts) for s in ledger.shards(rt.db, job.id)]
    LocalExecutor(rt).run(job.id)
    for shard in ledger.shards(rt.db, job.id):
        assert run_unit(LocalExecutor(rt), Unit("generate", job.id, shard.id))["status"] == "skipped"
    assert run_unit(LocalExecutor(rt), Unit("generate", job.id))["status"] == "skipped: job is done"
    assert [(s.path, s.sha256, s.attempts) for s in ledger.shards(rt.db, job.id)] == before
    assert ledger.job(rt.db, job.id).merge_count == 1


def test_merge_refuses_an_altered_shard_and_keeps_the_files(rt, synthetic_small, tiny_model_file):
    ds_row, split_row, _split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    job = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.01"], shard_size=100))
    shards = ledger.shards(rt.db, job.id)
    deferred = run_shards(rt, job.id)
    assert deferred.units == [Unit("generate", job.id)], "the last shard claimed the merge, exactly once"
    victim = ledger.shard(rt.db, shards[0].id)
    flip_byte(rt.store_file(victim.path))
    with pytest.raises(StoreError, match="altered|bytes"):
        run_unit(LocalExecutor(rt), deferred.units[0])
    failed = ledger.job(rt.db, job.id)
    assert failed.status == "failed" and ("altered" in failed.error or "bytes" in failed.error)
    assert all(ledger.shard(rt.db, s.id).status == "done" for s in shards), "the ledger keeps every shard"


def test_plan_rejects_bad_attacks_before_anything_is_stored(rt, synthetic_small, tiny_model_file):
    ds_row, split_row, _split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    for bad, message in (("fgsm:eps=1.5", "1.5"), ("warp:eps=0.1", "warp"), ("fgsm:eps=0.1,foo=2", "foo")):
        with pytest.raises(ConfigError, match=message):
            jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                       attacks=[bad]))
    with rt.db.session() as s:
        assert s.query(JobRow).count() == 0


def test_offline_adversarial_training_uses_the_store_and_charges_its_cost(rt, generated):
    job, split, ds_row, split_row, _art = generated
    train = jobs.plan(rt, TrainSpec(dataset_id=ds_row.id, split_id=split_row.id, architecture="tiny_cnn",
                                    mode="offline_adv", train={"epochs": 2, "lr": 3e-3, "augment": False},
                                    weights="random", store_job_id=job.id))
    run = ledger.run(rt.db, run_job(rt, train.id).result["run_id"])
    assert run.status == "done" and run.mode == "offline_adv"
    assert run.examples_seen == 2 * 3 * len(split.train), "original + two stored attacks, two epochs"
    assert run.generation_seconds > 0 and run.generation_gradient_evals > 0
    assert len(run.history["val_accuracy"]) == 2


def test_offline_training_refuses_a_store_of_test_images(rt, synthetic_small, tiny_model_file):
    ds_row, split_row, _split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    gen = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.01"], subset="test"))
    LocalExecutor(rt).run(gen.id)
    train = jobs.plan(rt, TrainSpec(dataset_id=ds_row.id, split_id=split_row.id, architecture="tiny_cnn",
                                    mode="offline_adv", train={"epochs": 1}, weights="random", store_job_id=gen.id))
    with pytest.raises(StoreError, match="leak test images"):
        LocalExecutor(rt).run(train.id)
    assert ledger.job(rt.db, train.id).status == "failed"


def test_offline_training_refuses_a_store_of_another_split(rt, synthetic_small, tiny_model_file, generated):
    job, _split, ds_row, _sr, _art = generated
    _ds, other_split_row, _s, _a = register_tiny(rt, synthetic_small, split_kind="subject")
    train = jobs.plan(rt, TrainSpec(dataset_id=ds_row.id, split_id=other_split_row.id, architecture="tiny_cnn",
                                    mode="offline_adv", train={"epochs": 1}, weights="random", store_job_id=job.id))
    with pytest.raises(StoreError, match="split_fingerprint"):
        LocalExecutor(rt).run(train.id)


def test_evaluate_writes_clean_whitebox_and_transfer_rows(rt, synthetic_small, tiny_model_file):
    from ferqueue.db.queries import results

    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    gen = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.03"], subset="test"))
    LocalExecutor(rt).run(gen.id)
    ev = jobs.plan(rt, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                    attacks=["fgsm:eps=0.03", "pgd:eps=0.03,steps=5"], transfer_store_job_id=gen.id))
    LocalExecutor(rt).run(ev.id)
    rows = results(rt.db)
    by = {(r["setting"], r["attack_key"]): r for r in rows}
    assert set(by) == {("clean", "none"), ("whitebox", "fgsm-eps0.03"), ("whitebox", "pgd-eps0.03-steps5"),
                       ("transfer", "fgsm-eps0.03")}
    assert all(r["n"] == len(split.test) for r in rows)
    clean = by[("clean", "none")]["accuracy"]
    assert by[("whitebox", "pgd-eps0.03-steps5")]["accuracy"] <= by[("whitebox", "fgsm-eps0.03")]["accuracy"] < clean
    # stored examples made against this very model score exactly like the white-box FGSM re-run
    assert by[("transfer", "fgsm-eps0.03")]["accuracy"] == pytest.approx(by[("whitebox", "fgsm-eps0.03")]["accuracy"])
    assert by[("transfer", "fgsm-eps0.03")]["source_artifact_id"] == artifact.id
    LocalExecutor(rt).run(ev.id)  # finished: a no-op, no duplicate rows
    assert run_unit(LocalExecutor(rt), Unit("evaluate", ev.id))["status"] == "skipped: job is done"
    assert len(results(rt.db)) == 4


def test_pipeline_runs_each_step_once_and_records_failure(rt, synthetic_small):
    from ferqueue.plans import PaperPlan

    ds_row, split_row, _split, _ = register_tiny(rt, synthetic_small)
    plan = PaperPlan(models=["tiny_cnn"], dataset_id=ds_row.id, split_id=split_row.id,
                     train={"epochs": 1, "augment": False}, adv_train={"epochs": 1, "augment": False},
                     weights="random", eval_attacks=["fgsm:eps=0.02"],
                     store_attacks=["fgsm:eps=0.01"], shard_size=200, eval_limit=20)
    pipeline = jobs.plan(rt, PipelineSpec(steps=plan.steps()))
    LocalExecutor(rt).run(pipeline.id)
    children = ledger.children(rt.db, pipeline.id)
    assert [c.step for c in children] == [s["name"] for s in plan.steps()]
    assert all(c.status == "done" for c in children)
    assert ledger.job(rt.db, pipeline.id).status == "done"
    assert jobs.kind("pipeline").advance(rt, ledger.job(rt.db, pipeline.id)) == []

    bad = jobs.plan(rt, PipelineSpec(steps=[{"name": "t", "kind": "train", "args": {
        "dataset_id": ds_row.id, "split_id": split_row.id, "architecture": "tiny_cnn", "mode": "offline_adv",
        "train": {"epochs": 1}, "weights": "random", "store_job_id": children[0].id}}]))
    with pytest.raises(StoreError):
        LocalExecutor(rt).run(bad.id)
    assert ledger.job(rt.db, bad.id).status == "failed"
    assert "not a finished generation job" in ledger.job(rt.db, bad.id).error


def test_the_ledger_records_store_and_artifact_paths_relative_to_their_roots(rt, generated):
    job, *_ = generated
    assert job.store_path == f"job-000001/store-{job.store_sha256[:12]}.h5" and rt.store_file(job.store_path).is_file()
    for shard in ledger.shards(rt.db, job.id):
        assert shard.path.startswith("job-000001/shard-") and rt.store_file(shard.path).is_file()


def test_a_dataset_and_split_registered_here_are_not_loaded_again(rt, synthetic_small):
    from ferqueue.data import make_split

    ds_row = rt.register_dataset(synthetic_small)
    split = make_split(synthetic_small, "random", seed=3)
    split_row = rt.register_split(ds_row.id, split)
    assert rt.dataset(ds_row) is synthetic_small
    assert rt.split(synthetic_small, split_row) is split


def test_a_new_job_kind_is_one_registration_and_runs_on_the_shared_path(rt, monkeypatch):
    """A kind with shards and a finishing step, defined here alone: planned, its shards run, the
    last shard claims the finish exactly once, the result recorded, and Celery routes it."""
    from dataclasses import dataclass

    from ferqueue.jobs import Finished, JobKind, ShardOutput, Spec, registry
    from ferqueue.queue import routes, task_names

    monkeypatch.setattr(registry, "_KINDS", dict(registry.registered()))
    monkeypatch.setattr(registry, "_BY_SPEC", dict(registry._BY_SPEC))

    @dataclass(frozen=True)
    class CountSpec(Spec):
        n: int = 3

    @registry.register
    class Count(JobKind):
        name, spec_type, queue = "count", CountSpec, "generate"
        shard_task, finish_task = "ferqueue.count_shard", "ferqueue.count_total"
        finished = []

        def plan_shards(self, rt, spec):
            return [{"index": i, "attack_key": "-", "attack_spec": "-", "start": i, "stop": i + 1} for i in range(spec.n)]

        def run_shard(self, rt, job, shard, progress):
            return ShardOutput(path=f"count-{shard.index}", sha256="0" * 64, size_bytes=0, n_examples=1, n_success=0,
                               queries=shard.index, seconds=0.0)

        def finish(self, rt, job, progress):
            Count.finished.append(job.id)
            return Finished({"total": sum(s.queries for s in ledger.shards(rt.db, job.id))})

    job = jobs.plan(rt, CountSpec(n=4))
    done = run_job(rt, job.id)
    assert done.status == "done" and done.result == {"total": 0 + 1 + 2 + 3} and Count.finished == [job.id]
    assert routes()["ferqueue.count_shard"] == "generate" and task_names()["ferqueue.count_shard"] is True


@pytest.mark.parametrize("damage", ["altered", "missing"])
def test_resume_regenerates_a_damaged_shard_and_says_which(rt, synthetic_small, tiny_model_file, damage):
    """The merge refuses a shard whose file changed or vanished after it was recorded; every
    later merge would too. `ferqueue resume` checks the recorded files, resets that shard, says
    which and why, and the job then finishes with every example once."""
    from click.testing import CliRunner

    from ferqueue.cli import main

    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    job = jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.01"], shard_size=100))
    deferred = run_shards(rt, job.id)
    victim = ledger.shards(rt.db, job.id)[1]
    path = rt.store_file(victim.path)
    if damage == "altered":
        flip_byte(path)
    else:
        path.unlink()
    with pytest.raises(StoreError, match=f"ferqueue resume {job.id}"):
        run_unit(LocalExecutor(rt), deferred.units[0])
    assert ledger.job(rt.db, job.id).status == "failed"

    result = CliRunner().invoke(main, ["resume", str(job.id), "--local"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"job {job.id} shard 1" in result.output and ("altered" if damage == "altered" else "missing") in result.output
    done = ledger.job(rt.db, job.id)
    assert done.status == "done" and done.merge_count == 1
    redone = ledger.shard(rt.db, victim.id)
    # resume grants the reset shard a fresh set of attempts (FERQUEUE_MAX_ATTEMPTS): it ran once since
    assert redone.status == "done" and redone.attempts == 1 and redone.sha256 is not None
    _job, store = rt.finished_store(job.id)
    np.testing.assert_array_equal(store.read("fgsm-eps0.01", ("source_index",))["source_index"], split.train)


def _evaluation_rows(rt, job_id: int) -> dict:
    from ferqueue.db.queries import evaluations

    ids = ledger.job(rt.db, job_id).result["evaluation_ids"]
    keep = ("setting", "attack_key", "n", "accuracy", "f1_weighted", "f1_macro", "confusion", "success_rate",
            "mean_queries", "mean_linf", "mean_l0", "mean_confidence")
    return {(e.setting, e.attack_key): {k: getattr(e, k) for k in keep} for e in evaluations(rt.db, ids).values()}


def test_sharded_evaluation_gives_exactly_the_metrics_of_one_task(rt, synthetic_small, tiny_model_file):
    """The same evaluation as one shard and as many (ranges that split the attacks' batches
    differently): identical rows, random attacks included, as every image draws from its own
    (seed, index) stream."""
    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    attacks = ["fgsm:eps=0.02", "pgd:eps=0.02,steps=3", "pixel:k=1,method=random,queries=15"]
    rows = {}
    for shard_size in (10_000, 20):
        job = jobs.plan(rt, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                         attacks=attacks, shard_size=shard_size))
        assert job.n_shards == (1 + len(attacks)) * (1 if shard_size > len(split.test) else -(-len(split.test) // 20))
        planned = [s.attack_key for s in ledger.shards(rt.db, job.id)]
        assert planned[0] == "whitebox:pixel-random-k1-q15" and planned[-1] == "clean:none", "the dearest part first"
        rows[shard_size] = _evaluation_rows(rt, run_job(rt, job.id).id)
    assert rows[10_000] == rows[20]
    assert len(rows[20]) == 4 and rows[20][("clean", "none")]["n"] == len(split.test)


def test_outcomes_say_which_images_fall_under_which_attack(rt, synthetic_small, tiny_model_file):
    from click.testing import CliRunner

    from ferqueue import app
    from ferqueue.cli import main

    ds_row, split_row, split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    job = jobs.plan(rt, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                     attacks=["fgsm:eps=0.05"], shard_size=30))
    run_job(rt, job.id)
    every = app.outcomes(rt, job.id, "fgsm-eps0.05")
    assert sorted(r["source_index"] for r in every) == sorted(split.test.tolist())
    fell = app.outcomes(rt, job.id, "fgsm-eps0.05", fell=True)
    assert fell and all(r["prediction"] != r["label"] == r["clean_prediction"] for r in fell)
    accuracy = ledger.job(rt.db, job.id).result
    rows = _evaluation_rows(rt, job.id)
    assert rows[("whitebox", "fgsm-eps0.05")]["accuracy"] == pytest.approx(
        np.mean([r["prediction"] == r["label"] for r in every]))
    assert accuracy["clean_accuracy"] == rows[("clean", "none")]["accuracy"]
    shown = CliRunner().invoke(main, ["outcomes", str(job.id), "--attack", "fgsm-eps0.05", "--fell", "--format",
                                      "json", "--limit", "0"])
    assert shown.exit_code == 0 and len(json.loads(shown.output)) == len(fell)
    missing = CliRunner().invoke(main, ["outcomes", str(job.id), "--attack", "pgd-eps0.1-steps10"])
    assert missing.exit_code == 1 and "has no part" in missing.output
