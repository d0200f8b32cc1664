"""FER2013 at full size through the distributed path: FGSM over all 28,709 training images,
sharded across Celery workers, timed from submit to the merged, verified store. Prints JSON.

    .venv/bin/python ops/bench/fer2013_generation.py [--workers 2] [--tf-threads 1] [--shard-size 1024]

Steps, all through the `ferqueue` command as a user would run them:
1. a FER2013 MobileNetV2 (ImageNet backbone, a linear probe of --probe-epochs on frozen
   features, no fine-tuning) is trained on the local executor, unless --artifact names one;
2. --workers Celery workers start on the `generate` queue, one pool child each, with
   --tf-threads TensorFlow threads (keep workers x threads <= cores);
3. `ferqueue submit generate` plans the shards; the script waits until the ledger says the
   job is done, then runs `ferqueue store verify` on the merged store.
The ledger (SQLite under --home) and the Redis database (--broker) are the benchmark's own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FERQUEUE = str(Path(sys.executable).with_name("ferqueue"))


def _log(message: str) -> None:
    print(f"[fer2013-bench] {message}", file=sys.stderr, flush=True)


def _ferqueue(env: dict, *args: str) -> str:
    done = subprocess.run([FERQUEUE, *args], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ferqueue {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(REPO.parent / "shared" / "datasets" / "fer2013"))
    parser.add_argument("--home", type=Path, default=REPO / "bench-out" / "fer2013-home")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--artifact", type=int, help="A FER2013 model already in the --home ledger.")
    parser.add_argument("--probe-epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tf-threads", type=int, default=1)
    parser.add_argument("--shard-size", type=int, default=1024)
    parser.add_argument("--eps", type=float, default=0.01)
    parser.add_argument("--limit", type=int, help="Attack only the first N training images (a quick check).")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "fer2013-generation.json")
    args = parser.parse_args()

    env = {**os.environ, "FERQUEUE_HOME": str(args.home), "FERQUEUE_BROKER_URL": args.broker,
           "FERQUEUE_RESULT_BACKEND": args.broker, "TF_CPP_MIN_LOG_LEVEL": "3"}
    for key in ("FERQUEUE_DATABASE_URL", "FERQUEUE_STORE_ROOT", "FERQUEUE_ARTIFACT_ROOT", "FERQUEUE_CACHE_DIR"):
        env.pop(key, None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("FERQUEUE_")})
    out: dict = {"dataset": os.path.relpath(args.dataset, REPO) if os.path.isabs(args.dataset) else args.dataset, "workers": args.workers, "tf_threads": args.tf_threads,
                 "shard_size": args.shard_size, "attack": f"fgsm:eps={args.eps:g}", "cpu_count": os.cpu_count()}
    started = time.perf_counter()
    args.home.mkdir(parents=True, exist_ok=True)


    from ferqueue.cluster import LocalCluster
    from ferqueue.db import ledger
    from ferqueue.runtime import Runtime

    rt = Runtime()  # the benchmark's own ledger under --home, migrated here
    artifact = args.artifact
    if artifact is None:
        _log(f"training a FER2013 MobileNetV2 probe ({args.probe_epochs} epochs) on the local executor")
        t0 = time.perf_counter()
        job_id = int(_ferqueue(env, "submit", "train", "--local", "-q", "--dataset", args.dataset, "--split",
                               "predefined", "--model", "mobilenetv2", "--epochs", "0", "--probe-epochs",
                               str(args.probe_epochs)).strip().splitlines()[-1])
        out["train_seconds_incl_dataset_load"] = time.perf_counter() - t0
        result = ledger.job(rt.db, job_id).result
        artifact = result["artifact_id"]
        out["model"] = {"artifact_id": artifact, "test_accuracy": result["val_accuracy"],
                        "train_wall_seconds": result["wall_seconds"], "probe_epochs": args.probe_epochs}
        _log(f"model {artifact}: test accuracy {result['val_accuracy']:.4f}")

    art = ledger.artifact(rt.db, artifact)
    cluster = LocalCluster(args.home, {k: v for k, v in env.items() if k.startswith("FERQUEUE_")}, cwd=REPO)
    cluster.app().control.purge()
    try:
        t0 = time.perf_counter()
        for _ in range(args.workers):
            cluster.start_worker(queues="generate", concurrency=1, tf_threads=args.tf_threads, name="fer",
                                 timeout=120, loglevel="warning")
        out["worker_start_seconds"] = time.perf_counter() - t0

        submit = ["submit", "generate", "-q", "--artifact", str(artifact), "--dataset", args.dataset,
                  "--image-size", str(art.image_size), "--split", "predefined", "--attack",
                  f"fgsm:eps={args.eps:g}", "--shard-size", str(args.shard_size)]
        if args.limit:
            submit += ["--limit", str(args.limit)]
        t0 = time.perf_counter()
        job_id = int(_ferqueue(env, *submit).strip().splitlines()[-1])
        out["submit_seconds"] = time.perf_counter() - t0
        _log(f"generation job {job_id} submitted in {out['submit_seconds']:.1f} s; waiting")
        job = cluster.wait_for_job(rt, job_id, timeout=24 * 3600, interval=2)
        out["job_seconds_submit_to_merged"] = time.perf_counter() - t0
        if job.status != "done":
            raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
        shards = ledger.shards(rt.db, job_id)
        t0 = time.perf_counter()
        verify = _ferqueue(env, "store", "verify", str(job_id))
        out["verify_seconds"] = time.perf_counter() - t0
        n = job.result["n_examples"]
        out.update({
            "job_id": job_id,
            "n_examples": n,
            "n_shards": len(shards),
            "n_success": job.result["n_success"],
            "success_rate_of_all": job.result["n_success"] / n,
            "shard_seconds_sum": job.result["shard_seconds"],
            "shard_seconds_median": sorted(s.seconds for s in shards)[len(shards) // 2],
            "merge_seconds": job.result["merge_seconds"],
            "images_per_second_end_to_end": n / out["job_seconds_submit_to_merged"],
            "images_per_second_per_worker_busy": n / job.result["shard_seconds"] * 1.0,
            "parallel_efficiency": job.result["shard_seconds"] / (args.workers * out["job_seconds_submit_to_merged"]),
            "attempts": sum(s.attempts for s in shards),
            "shards_per_worker_process": dict(Counter(s.worker or "?" for s in shards)),
            "store_verify": verify.strip().splitlines()[-1] if verify.strip() else "",
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        })
        store = Path(job.store_path)
        out["store_bytes"] = store.stat().st_size
    finally:
        cluster.stop()
    out["total_seconds"] = time.perf_counter() - started
    text = json.dumps(out, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
