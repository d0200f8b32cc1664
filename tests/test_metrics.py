"""`ferqueue metrics`: the ledger's job and shard counts in Prometheus's text format, printed or
written atomically as a node_exporter textfile, read back with Prometheus's own parser."""

from __future__ import annotations

from click.testing import CliRunner
from fq_helpers import register_tiny, run_job
from prometheus_client.parser import text_string_to_metric_families

from ferqueue import jobs
from ferqueue.cli import main
from ferqueue.db import ledger
from ferqueue.jobs import GenerateSpec


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_jobs_shards_and_attempts(rt, synthetic_small, tiny_model_file, tmp_path):
    ds_row, split_row, _split, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)

    def generate(limit: int):
        return jobs.plan(rt, GenerateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                                          attacks=["fgsm:eps=0.03"], shard_size=40, limit=limit))

    finished = generate(80)  # two shards, run here
    assert run_job(rt, finished.id).status == "done"
    waiting = generate(120)  # three shards: one started by a worker, two pending
    first = ledger.shards(rt.db, waiting.id)[0]
    assert ledger.begin_shard(rt.db, first.id, "host:1") is not None

    printed = CliRunner().invoke(main, ["metrics"], catch_exceptions=False)
    assert printed.exit_code == 0, printed.output
    samples = _samples(printed.output)

    def value(name, **labels):
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("ferqueue_jobs", kind="generate", status="done") == 1
    assert value("ferqueue_jobs", kind="generate", status="failed") == 0, "every kind x state has a series"
    assert value("ferqueue_jobs", kind="train", status="running") == 0
    assert value("ferqueue_shards", kind="generate", status="done") == 2
    assert value("ferqueue_shards", kind="generate", status="running") == 1
    assert value("ferqueue_shards", kind="generate", status="pending") == 2
    assert value("ferqueue_shard_attempts_total", kind="generate") == 3
    assert value("ferqueue_active_job_shards", job_id=str(waiting.id), kind="generate", status="running") == 1
    assert not any(key[0] == "ferqueue_active_job_shards" and ("job_id", str(finished.id)) in key[1]
                   for key in samples), "only unfinished jobs have per-job series"

    target = tmp_path / "textfile" / "ferqueue.prom"
    written = CliRunner().invoke(main, ["metrics", "--out", str(target)], catch_exceptions=False)
    assert written.exit_code == 0 and str(target) in written.output
    assert _samples(target.read_text()) == samples
    assert [p.name for p in target.parent.iterdir()] == ["ferqueue.prom"], "no temporary file is left"
