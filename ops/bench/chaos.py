"""Chaos benchmark: a generation job then a sharded evaluation on workers that keep dying; JSON.

    .venv/bin/python ops/bench/chaos.py --broker redis      [--workers 3] [--shards 32] [--out FILE]
    .venv/bin/python ops/bench/chaos.py --broker rabbitmq

A deployment of its own: each worker is a host (a network namespace with a hostname of its own
and its own FERQUEUE_HOME, no shared folder) reaching PostgreSQL, the broker (Redis with an
append-only file, or a RabbitMQ node) and moto's S3 server, all started here and bound to the
bridge's address, so that restarting them touches nothing else on the machine. The store,
the model and the dataset cache live in the object store (FERQUEUE_STORE_URL).

The same two jobs run twice: fault-free, then under chaos, where a bounded loop SIGKILLs a
random worker (its whole process group) every --kill-every seconds and starts it again on the
same host (a host that comes back), restarts the broker once and PostgreSQL once. Nobody runs
`ferqueue resume`: the driver only submits the generation job, and the evaluation once the
generation is done, as a user would. Leases, retries and the supervisor keep their defaults
unless --lease-seconds is given.

Reported: examples expected, stored and duplicated (every planned source index once, checked
example by example), attempts per shard, for each kill the units the dead worker held and
the time until each was started again or finished by another worker (ledger timestamps), the
broker's and PostgreSQL's downtime, and the total time against the fault-free run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BUCKET = "ferqueue-chaos"


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _children(pid: int) -> set[int]:
    """Every process below ``pid`` (a worker's pool children)."""
    found, frontier = set(), {pid}
    while frontier:
        parent = frontier.pop()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent and int(stat.parent.name) not in found:
                found.add(int(stat.parent.name))
                frontier.add(int(stat.parent.name))
    return found


def _retry(call, what: str, seconds: float = 120.0):
    """``call()``, tried again while the database or the broker is restarting."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - a restart in progress; anything else repeats and is raised
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: {exc}") from exc
            time.sleep(0.5)


class Deployment:
    def __init__(self, args):
        from ferqueue.cluster import LocalCluster
        from ferqueue.servers import (
            CREDENTIALS,
            Hosts,
            MotoServer,
            PostgresServer,
            RabbitServer,
            RedisServer,
            namespaces_refused,
        )

        self.args = args
        (REPO / "bench-out").mkdir(exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix=f"chaos-{args.broker}-", dir=REPO / "bench-out"))
        self.closing = []
        refused = namespaces_refused()
        self.hosts = None if refused else Hosts(args.workers, prefix=f"10.78.{random.randint(10, 250)}")
        if self.hosts is not None:
            self.closing.append(self.hosts)
        self.namespaces = refused or "every worker in a network namespace of its own"
        address = self.hosts.address if self.hosts else "127.0.0.1"
        self.postgres = PostgresServer(host=address).start()
        self.closing.append(self.postgres)
        if args.broker == "redis":
            self.broker = RedisServer(self.root / "redis", address).start()
            urls = {"FERQUEUE_BROKER_URL": self.broker.url(0), "FERQUEUE_RESULT_BACKEND": self.broker.url(1)}
        else:
            self.broker = RabbitServer(host=address).start()
            urls = {"FERQUEUE_BROKER_URL": self.broker.url()}  # results over rpc://
        self.closing.append(self.broker)
        self.moto = MotoServer(self.root / "moto", address).start()
        self.closing.append(self.moto)
        self.moto.create_bucket(BUCKET)
        os.environ.update(CREDENTIALS)
        env = {"FERQUEUE_DATABASE_URL": self.postgres.create_database("chaos"), **urls,
               "FERQUEUE_STORE_URL": f"s3://{BUCKET}/chaos", "FERQUEUE_S3_ENDPOINT_URL": self.moto.endpoint,
               "FERQUEUE_TF_THREADS": "1", **CREDENTIALS}
        if args.lease_seconds:
            env["FERQUEUE_LEASE_SECONDS"] = str(args.lease_seconds)
        self.cluster = LocalCluster(self.root / "driver", {**env, "FERQUEUE_HOME": str(self.root / "driver-home")},
                                    cwd=REPO)
        for key in [k for k in os.environ if k.startswith("FERQUEUE_")]:
            del os.environ[key]
        os.environ.update({**self.cluster.env, "TF_CPP_MIN_LOG_LEVEL": "3"})
        self.rt = self.cluster.runtime()
        self.settings = self.rt.settings
        self.workers: list = [None] * args.workers

    def close(self) -> None:
        self.cluster.stop()
        for thing in reversed(self.closing):
            try:
                thing.close()
            except Exception as exc:  # noqa: BLE001 - clean up the rest
                print(f"closing {thing}: {exc}", file=sys.stderr)

    # ---- data, model, workers ------------------------------------------------------------------

    def setup(self) -> None:
        from ferqueue.data import load_dataset, make_split
        from ferqueue.db import ledger
        from ferqueue.models import build_model, save_model
        from ferqueue.train import TrainConfig, train_model

        args = self.args
        self.limit = args.shards * args.shard_size
        data = load_dataset(f"synthetic:{self.limit * 5 // 4 + 8}", args.image_size, cache_dir=self.settings.cache_dir)
        split = make_split(data, "random", test_fraction=0.2, seed=0)
        self.ds_row = self.rt.register_dataset(data)
        self.split_row = self.rt.register_split(self.ds_row.id, split)
        self.split = split
        self.rt.tensorflow()
        built = build_model("tiny_cnn", len(data.class_names), args.image_size, weights="random", seed=0)
        train_model(built.model, *data.take(split.train[:512]), TrainConfig(epochs=5, batch_size=32, lr=3e-3, seed=0))
        path, sha = save_model(built.model, self.settings.artifact_root, "tiny_cnn-chaos")
        self.artifact = ledger.register_artifact(
            self.rt.db, architecture="tiny_cnn", path=self.rt.artifact_put(path), sha256=sha,
            num_params=built.num_params, image_size=args.image_size, class_names=list(data.class_names),
            weights="random", size_bytes=path.stat().st_size)
        for i in range(args.workers):
            self.start_worker(i)

    def start_worker(self, i: int):
        argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-E", "-Q", "generate,evaluate",
                "-c", "1", "-n", "{node}", "-l", "info"]
        host = self.hosts.wrap(i, []) if self.hosts else None
        try:
            proc, _node = self.cluster.start_worker(name=f"host{i}-", argv=argv, host=host, timeout=180,
                                                    env={"FERQUEUE_HOME": str(self.root / f"host{i}-home")})
        except Exception:  # noqa: BLE001 - its ping met the broker restarting: the worker itself is up
            proc = self.cluster.workers[-1]
            if proc.poll() is not None:
                raise
        self.workers[i] = proc
        return proc

    def warm_up(self) -> None:
        """A small job first, so that both measured runs find the workers' TensorFlow started."""
        from ferqueue import jobs
        from ferqueue.queue import CeleryExecutor

        job = jobs.plan(self.rt, jobs.GenerateSpec(
            artifact_id=self.artifact.id, dataset_id=self.ds_row.id, split_id=self.split_row.id,
            attacks=["fgsm:eps=0.01"], shard_size=self.args.shard_size, limit=len(self.workers) * self.args.shard_size))
        CeleryExecutor(self.rt).submit(job.id)
        self._wait(job.id, None)

    # ---- one run of the two jobs ---------------------------------------------------------------

    def run(self, chaos: bool) -> dict:
        from ferqueue import jobs
        from ferqueue.db import ledger
        from ferqueue.queue import CeleryExecutor

        args = self.args
        executor = CeleryExecutor(self.rt)
        started = time.monotonic()
        events = Chaos(self, started) if chaos else None
        gen = jobs.plan(self.rt, jobs.GenerateSpec(
            artifact_id=self.artifact.id, dataset_id=self.ds_row.id, split_id=self.split_row.id,
            attacks=[args.attack], shard_size=args.shard_size, limit=self.limit))
        _retry(lambda: executor.submit(gen.id), "submitting the generation job")
        self._wait(gen.id, events)
        generation_seconds = time.monotonic() - started
        evaluation = _retry(lambda: jobs.plan(self.rt, jobs.EvaluateSpec(
            artifact_id=self.artifact.id, dataset_id=self.ds_row.id, split_id=self.split_row.id,
            attacks=[args.eval_attack], transfer_store_job_id=gen.id, shard_size=args.eval_shard_size)),
            "planning the evaluation")
        _retry(lambda: executor.submit(evaluation.id), "submitting the evaluation")
        self._wait(evaluation.id, events)
        total = time.monotonic() - started
        if events is not None:
            events.finish()
        gen_job, eval_job = ledger.job(self.rt.db, gen.id), ledger.job(self.rt.db, evaluation.id)
        out = {"total_seconds": round(total, 1), "generation_seconds": round(generation_seconds, 1),
               "generation": self._generation_report(gen_job), "evaluation": self._evaluation_report(eval_job),
               "load_after": _load()}
        if events is not None:
            out["chaos"] = events.report()
        return out

    def _wait(self, job_id: int, events) -> None:
        from ferqueue.db import ledger
        from ferqueue.vocabulary import FINAL_JOB_STATES

        deadline = time.monotonic() + self.args.deadline
        while True:
            if events is not None:
                events.step()
            try:
                job = ledger.job(self.rt.db, job_id)
                if job.status in FINAL_JOB_STATES:
                    if job.status != "done":
                        raise RuntimeError(f"job {job_id} ended {job.status}: {job.error}")
                    return
            except RuntimeError:
                raise
            except Exception:  # noqa: BLE001 - PostgreSQL restarting
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"job {job_id} did not finish within {self.args.deadline} s\n"
                                   + self.cluster.log_tail(2000))
            time.sleep(0.5)

    def _generation_report(self, job) -> dict:
        import numpy as np

        from ferqueue.db import ledger

        _job, store = self.rt.finished_store(job.id)
        index = store.read(store.attacks[0], ("source_index",))["source_index"]
        expected = self.split.train[: self.limit]
        shards = ledger.shards(self.rt.db, job.id)
        attempts = [s.attempts for s in shards]
        return {"job_id": job.id, "shards": len(shards), "examples_expected": int(len(expected)),
                "examples_stored": int(len(index)), "examples_duplicated": int(len(index) - len(np.unique(index))),
                "examples_lost": int(len(np.setdiff1d(expected, index))),
                "exactly_the_planned_examples_in_order": bool(np.array_equal(index, expected)),
                "merge_count": job.merge_count, "merge_attempts": job.attempts,
                "attempts_per_shard": attempts, "attempts_histogram": dict(sorted(Counter(attempts).items())),
                "store_problems": len(store.verify())}

    def _evaluation_report(self, job) -> dict:
        from ferqueue.db import ledger
        from ferqueue.db.queries import results

        rows = [r for r in results(self.rt.db) if r["evaluation_id"] in job.result["evaluation_ids"]]
        shards = ledger.shards(self.rt.db, job.id)
        attempts = [s.attempts for s in shards]
        n_test = len(self.split.test)
        return {"job_id": job.id, "shards": len(shards), "aggregation_attempts": job.attempts,
                "rows": {f"{r['setting']}:{r['attack_key']}": r["n"] for r in rows},
                "examples_expected": {"clean": n_test, "whitebox": n_test, "transfer": self.limit},
                "every_row_complete": all(r["n"] == (self.limit if r["setting"] == "transfer" else n_test)
                                          for r in rows) and len(rows) == 3,
                "outcomes_duplicated": self._duplicated_outcomes(job.id),
                "attempts_per_shard": attempts, "attempts_histogram": dict(sorted(Counter(attempts).items()))}


    def _duplicated_outcomes(self, job_id: int) -> int:
        """Examples of an evaluation whose outcome is stored more than once (per part)."""
        from ferqueue import app

        seen = Counter((row["part"], row["source_index"]) for row in app.outcomes(self.rt, job_id))
        return sum(count - 1 for count in seen.values())


class Chaos:
    """The bounded fault loop, stepped from the driver's polling loop."""

    def __init__(self, deployment: Deployment, started: float):
        self.d = deployment
        self.started = started
        self.next_kill = started + deployment.args.kill_every
        self.kills: list[dict] = []
        self.broker_restart: dict | None = None
        self.postgres_restart: dict | None = None
        self.rng = random.Random(deployment.args.seed)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def step(self) -> None:
        args = self.d.args
        if self.broker_restart is None and self.elapsed() >= args.broker_restart_at:
            self.broker_restart = self._restart(self.d.broker)
        if self.postgres_restart is None and self.elapsed() >= args.postgres_restart_at:
            self.postgres_restart = self._restart(self.d.postgres)
        if time.monotonic() >= self.next_kill and len(self.kills) < args.max_kills:
            self.kill()
            self.next_kill += args.kill_every
        self.observe()

    def _restart(self, server) -> dict:
        at = self.elapsed()
        began = time.monotonic()
        server.restart()
        return {"at_seconds": round(at, 1), "down_seconds": round(time.monotonic() - began, 1)}

    def _held(self, pids: set[int]) -> list[dict]:
        """Units a set of processes holds now, from the ledger: running shards, leased finishing units."""
        from sqlalchemy import select

        from ferqueue.db.tables import JobRow, ShardRow

        held = []
        with self.d.rt.db.session() as s:
            for row in s.scalars(select(ShardRow).where(ShardRow.status == "running")):
                if row.worker and int(row.worker.rsplit(":", 1)[1]) in pids:
                    held.append({"unit": f"job {row.job_id} shard {row.index}", "table": "shard", "id": row.id,
                                 "attempts": row.attempts})
            for row in s.scalars(select(JobRow).where(JobRow.lease_owner.is_not(None))):
                if int(row.lease_owner.split(":")[1]) in pids:
                    held.append({"unit": f"job {row.id} {row.kind} finishing unit", "table": "job", "id": row.id,
                                 "attempts": row.attempts})
        return held

    def kill(self) -> None:
        i = self.rng.randrange(len(self.d.workers))
        proc = self.d.workers[i]
        pids = {proc.pid, *_children(proc.pid)}
        held = _retry(lambda: self._held(pids), "reading what the worker holds", 60)
        at = self.elapsed()
        killed_at = datetime.now(timezone.utc).replace(tzinfo=None)
        self.d.cluster.kill(proc)  # SIGKILL to the whole process group: main process and pool child
        record = {"at_seconds": round(at, 1), "host": i, "lost_units": held, "killed_at": killed_at}
        self.kills.append(record)
        try:
            self.d.start_worker(i)  # the host comes back
            record["restarted_after_seconds"] = round(self.elapsed() - at, 1)
        except Exception as exc:  # noqa: BLE001 - reported; the others go on
            record["restart_error"] = str(exc)[:300]

    def observe(self) -> None:
        """When each lost unit was started again (or finished) by another worker: ledger timestamps."""
        from ferqueue.db import ledger

        for kill in self.kills:
            for unit in kill["lost_units"]:
                if "recovered_after_seconds" in unit:
                    continue
                try:
                    row = ledger.shard(self.d.rt.db, unit["id"]) if unit["table"] == "shard" else \
                        ledger.job(self.d.rt.db, unit["id"])
                except Exception:  # noqa: BLE001 - PostgreSQL restarting
                    return
                if row.attempts > unit["attempts"] and row.started_at and unit["table"] == "shard":
                    unit["recovered_after_seconds"] = round((row.started_at - kill["killed_at"]).total_seconds(), 1)
                    unit["recovered_by"] = "re-dispatched and started again"
                elif row.attempts > unit["attempts"] and unit["table"] == "job":
                    unit["recovered_after_seconds"] = round((ledger.now() - kill["killed_at"]).total_seconds(), 1)
                    unit["recovered_by"] = "its finishing unit started again"
                elif row.status == "done":
                    done_at = row.finished_at or ledger.now()
                    unit["recovered_after_seconds"] = round((done_at - kill["killed_at"]).total_seconds(), 1)
                    unit["recovered_by"] = "finished by another worker"

    def finish(self) -> None:
        self.observe()

    def report(self) -> dict:
        kills = []
        for kill in self.kills:
            kills.append({k: v for k, v in kill.items() if k != "killed_at"})
        recoveries = [u["recovered_after_seconds"] for k in self.kills for u in k["lost_units"]
                      if "recovered_after_seconds" in u]
        unrecovered = [u["unit"] for k in self.kills for u in k["lost_units"] if "recovered_after_seconds" not in u]
        return {"kills": kills, "kill_count": len(kills), "units_lost_with_killed_workers": len(recoveries) +
                len(unrecovered), "unrecovered_units": unrecovered,
                "max_recovery_seconds": max(recoveries) if recoveries else None,
                "mean_recovery_seconds": round(sum(recoveries) / len(recoveries), 1) if recoveries else None,
                "broker_restart": self.broker_restart, "postgres_restart": self.postgres_restart,
                "human_commands": 0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), default="redis")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--shards", type=int, default=32, help="generation shards (at least 30)")
    parser.add_argument("--shard-size", type=int, default=32)
    parser.add_argument("--eval-shard-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--attack", default="pgd:eps=0.03,steps=1000",
                        help="the generation's attack (about 9 s a shard of 32 images on one thread here)")
    parser.add_argument("--eval-attack", default="pgd:eps=0.03,steps=300")
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--max-kills", type=int, default=40)
    parser.add_argument("--broker-restart-at", type=float, default=30.0)
    parser.add_argument("--postgres-restart-at", type=float, default=50.0)
    parser.add_argument("--lease-seconds", type=int, default=0, help="FERQUEUE_LEASE_SECONDS (0: its default)")
    parser.add_argument("--deadline", type=float, default=1800.0, help="seconds a job may take before giving up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    # a `timeout` or Ctrl-C still stops every process and server started here, and the namespaces
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    deployment = Deployment(args)
    try:
        deployment.setup()
        settings = deployment.settings
        out = {"benchmark": "chaos", "broker": args.broker, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "workers": args.workers, "hosts": deployment.namespaces, "store": "S3 API (moto server)",
               "lease_seconds": settings.lease_seconds, "supervise_seconds": settings.supervise_seconds,
               "max_attempts": settings.max_attempts, "kill_every_seconds": args.kill_every,
               "attack": args.attack, "shard_size": args.shard_size, "image_size": args.image_size,
               "cpu_cores": os.cpu_count(), "load_before": _load()}
        deployment.warm_up()
        out["fault_free"] = deployment.run(chaos=False)
        out["with_faults"] = deployment.run(chaos=True)
        out["slowdown"] = round(out["with_faults"]["total_seconds"] / out["fault_free"]["total_seconds"], 2)
        g, e = out["with_faults"]["generation"], out["with_faults"]["evaluation"]
        chaos = out["with_faults"]["chaos"]
        out["targets"] = {
            "zero_lost": g["examples_lost"] == 0 and e["every_row_complete"],
            "zero_duplicated": g["examples_duplicated"] == 0 and e["outcomes_duplicated"] == 0,
            "no_human_command": chaos["human_commands"] == 0,
            "every_kill_recovered_within_120_s": not chaos["unrecovered_units"]
            and (chaos["max_recovery_seconds"] or 0) <= 120,
        }
    finally:
        deployment.close()
    text = json.dumps(out, indent=2, default=str)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    shutil.rmtree(deployment.root, ignore_errors=True)


if __name__ == "__main__":
    main()
