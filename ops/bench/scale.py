"""Large datasets end to end, in flat memory: prints JSON.

    .venv/bin/python ops/bench/scale.py --sizes 100000,1000000 [--image-size 48] [--workers 2]

For each size N, a synthetic dataset of N images goes through every stage, each on fresh
processes whose peak resident memory is read from /proc (VmHWM) while they run:

1. dataset: render and cache the N images, register the dataset and its 80:20 split;
2. generate: FGSM (eps 0.01) and one-pixel (random, --pixel-queries) examples of every training
   image, on --workers Celery workers (one TensorFlow thread each), shards of --shard-size;
3. merge: part of the generation job (its merge seconds, from the ledger);
4. train: offline adversarial training of tiny_cnn for one epoch on original + stored examples,
   on one worker (--train-threads TensorFlow threads), streamed from the cache and the store;
5. evaluate: a sharded evaluation (clean, FGSM, PGD) of the trained model on the test subset,
   on --workers workers.

The source model of the generation is a tiny_cnn trained on a separate small synthetic set
(same classes and size). Disk bytes per example per attack come from the store's summary;
dense float32 is the reference. At --compare-size (default: the smallest size) the evaluation
also runs on one worker, for the speed-up of two.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FERQUEUE = str(Path(sys.executable).with_name("ferqueue"))


class PeakMemory:
    """The peak resident memory (VmHWM) of every process descended from this one, sampled."""

    def __init__(self, interval: float = 0.5):
        self.interval = interval
        self.peaks: dict[int, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _descendants(self) -> list[int]:
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        found, frontier = [], [os.getpid()]
        while frontier:
            pid = frontier.pop()
            kids = [child for child, parent in parents.items() if parent == pid]
            found += kids
            frontier += kids
        return found

    def _sample(self) -> None:
        for pid in self._descendants():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            hwm = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM:")), 0)
            cmdline = cmdline.replace(f"{REPO}/", "")  # committed JSON names paths relative to the project
            role = "worker" if " worker " in f" {cmdline} " else "cli" if "ferqueue" in cmdline else "other"
            entry = self.peaks.setdefault(pid, {"pid": pid, "role": role, "command": cmdline[:160], "peak_rss": 0})
            entry["peak_rss"] = max(entry["peak_rss"], hwm)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._sample()
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        own = int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                        if line.startswith("VmHWM:"))) * 1024
        procs = sorted(self.peaks.values(), key=lambda p: -p["peak_rss"])
        return {"max_peak_rss_bytes": max([p["peak_rss"] for p in procs] or [0]),
                "bench_process_peak_rss_bytes": own, "processes": procs}


def _free_disk(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def _ferqueue(env: dict, *args: str) -> str:
    done = subprocess.run([FERQUEUE, *args], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"ferqueue {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_size(n: int, args, home: Path) -> dict:
    from ferqueue.cluster import LocalCluster
    from ferqueue.db import ledger
    from ferqueue.runtime import Runtime

    env = {k: v for k, v in os.environ.items() if not k.startswith("FERQUEUE_")}
    env.update(FERQUEUE_HOME=str(home), FERQUEUE_BROKER_URL=args.broker, FERQUEUE_RESULT_BACKEND=args.broker,
               TF_CPP_MIN_LOG_LEVEL="3")
    ferqueue_env = {k: v for k, v in env.items() if k.startswith("FERQUEUE_")}
    out: dict = {"images": n, "image_size": args.image_size}
    dataset = f"synthetic:{n}"

    _log(f"N={n}: rendering and registering the dataset")
    with PeakMemory() as memory:
        started = time.perf_counter()
        code = ("from ferqueue import app; rt = app.open_runtime(write=True); "
                f"d, s = app.dataset_and_split(rt, {dataset!r}, {args.image_size}, 'random'); print(d.id, s.id)")
        done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(done.stderr)
        ds_id, split_id = (int(v) for v in done.stdout.split())
        seconds = time.perf_counter() - started
    rt = Runtime()
    split = ledger.split(rt.db, split_id)
    out["dataset"] = {"seconds": seconds, "examples_per_second": n / seconds, "n_train": split.n_train,
                      "n_test": split.n_test, "cache_bytes": sum(p.stat().st_size for p in (home / "cache").glob("*.npy")),
                      **memory.summary()}

    _log("training the source model on a small synthetic set")
    source = int(_ferqueue(env, "submit", "train", "--local", "-q", "--dataset", "synthetic:4000", "--image-size",
                           str(args.image_size), "--model", "tiny_cnn", "--epochs", "5", "--batch-size", "32",
                           "--lr", "0.003", "--weights", "random").strip().splitlines()[-1])
    source_artifact = ledger.job(rt.db, source).result["artifact_id"]

    def stage(name: str, workers: int, threads: int, submit: list[str], queues: str) -> tuple[int, dict]:
        cluster = LocalCluster(home / f"logs-{name}", ferqueue_env, cwd=REPO)
        with PeakMemory() as memory:
            try:
                for _ in range(workers):
                    cluster.start_worker(queues=queues, concurrency=1, tf_threads=threads, name=name, timeout=300,
                                         loglevel="warning")
                started = time.perf_counter()
                job_id = int(_ferqueue(env, *submit, "-q").strip().splitlines()[-1])
                job = cluster.wait_for_job(rt, job_id, timeout=24 * 3600, interval=1.0)
                seconds = time.perf_counter() - started
            finally:
                cluster.stop()
        if job.status != "done":
            raise SystemExit(f"{name} job {job_id} ended {job.status}: {job.error}\n{cluster.log_tail()}")
        return job_id, {"job_id": job_id, "seconds": seconds, "workers": workers, "tf_threads_per_worker": threads,
                        **memory.summary()}

    _log(f"N={n}: generation on {args.workers} workers")
    gen_id, gen = stage("generate", args.workers, 1, [
        "submit", "generate", "--artifact", str(source_artifact), "--dataset", str(ds_id), "--split", str(split_id),
        "--attack", "fgsm:eps=0.01", "--attack", f"pixel:k=1,method=random,queries={args.pixel_queries}",
        "--shard-size", str(args.shard_size)], "generate")
    gen_job = ledger.job(rt.db, gen_id)
    _store_job, store = rt.finished_store(gen_id)
    dense = args.image_size * args.image_size * 3 * 4
    gen.update({"examples": gen_job.result["n_examples"],
                "examples_per_second": gen_job.result["n_examples"] / gen["seconds"],
                "shards": gen_job.n_shards,
                "store": [{"attack": row["attack_key"], "examples": row["n_examples"],
                           "bytes_per_example": row["bytes_per_example"], "encodings": row["encodings"],
                           "times_smaller_than_dense_float32": dense / row["bytes_per_example"]}
                          for row in store.summary()],
                "dense_float32_bytes_per_example": dense})
    out["generate"] = gen
    out["merge"] = {"seconds": gen_job.result["merge_seconds"], "store_file_bytes": gen_job.store_size}

    _log(f"N={n}: offline adversarial training, one epoch")
    train_id, train = stage("train", 1, args.train_threads, [
        "submit", "train", "--dataset", str(ds_id), "--split", str(split_id), "--model", "tiny_cnn", "--mode",
        "offline_adv", "--store-job", str(gen_id), "--epochs", "1", "--batch-size", "64", "--lr", "0.003",
        "--weights", "random"], "train")
    run = ledger.run(rt.db, ledger.job(rt.db, train_id).result["run_id"])
    train.update({"examples": run.examples_seen, "examples_per_second": run.examples_seen / train["seconds"],
                  "train_wall_seconds": run.wall_seconds, "val_accuracy": (run.history or {}).get("val_accuracy")})
    out["train"] = train
    hardened = ledger.job(rt.db, train_id).result["artifact_id"]

    evaluate = ["submit", "evaluate", "--artifact", str(hardened), "--dataset", str(ds_id), "--split", str(split_id),
                "--attack", "fgsm:eps=0.01", "--attack", f"pgd:eps=0.01,steps={args.pgd_steps}",
                "--shard-size", str(args.eval_shard_size)]
    _log(f"N={n}: sharded evaluation on {args.workers} workers")
    eval_id, ev = stage("evaluate", args.workers, 1, evaluate, "evaluate")
    ev_job = ledger.job(rt.db, eval_id)
    examples = (2 + 1) * split.n_test  # clean, FGSM and PGD over the test subset
    ev.update({"examples": examples, "examples_per_second": examples / ev["seconds"], "shards": ev_job.n_shards,
               "clean_accuracy": ev_job.result["clean_accuracy"]})
    out["evaluate"] = ev
    if n == args.compare_size:
        _log(f"N={n}: the same evaluation on one worker")
        _id, one = stage("evaluate-1", 1, 1, evaluate, "evaluate")
        out["evaluate_one_worker"] = {"seconds": one["seconds"], "max_peak_rss_bytes": one["max_peak_rss_bytes"]}
        out["evaluate_speedup_2_workers_vs_1"] = one["seconds"] / ev["seconds"]
    out["peak_rss_any_process_bytes"] = max(out[s]["max_peak_rss_bytes"] for s in ("dataset", "generate", "train",
                                                                                    "evaluate"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-threads", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=8192)
    parser.add_argument("--eval-shard-size", type=int, default=4096)
    parser.add_argument("--pixel-queries", type=int, default=10)
    parser.add_argument("--pgd-steps", type=int, default=10)
    parser.add_argument("--compare-size", type=int, help="Also evaluate on one worker at this size. [smallest]")
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/13", help="An otherwise unused Redis database.")
    parser.add_argument("--root", type=Path, default=REPO / "bench-out" / "scale")
    parser.add_argument("--keep", action="store_true", help="Keep each size's home (cache, stores, ledger).")
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "scale.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.compare_size = args.compare_size or min(sizes)
    args.root.mkdir(parents=True, exist_ok=True)
    import redis

    broker = redis.Redis.from_url(args.broker)
    if broker.dbsize():
        parser.error(f"Redis database {args.broker} is not empty; pick an unused one with --broker")
    report = {"benchmark": "large datasets end to end in flat memory (ops/bench/scale.py)",
              "machine": {"cpu_count": os.cpu_count(), "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")},
              "free_disk_bytes_at_start": _free_disk(args.root),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                           if k not in ("root", "out")},
              "sizes": []}
    for n in sizes:
        home = args.root / f"n{n}"
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        os.environ.update(FERQUEUE_HOME=str(home))
        for key in ("FERQUEUE_DATABASE_URL", "FERQUEUE_STORE_ROOT", "FERQUEUE_ARTIFACT_ROOT", "FERQUEUE_CACHE_DIR"):
            os.environ.pop(key, None)
        result = run_size(n, args, home)
        result["free_disk_bytes_after"] = _free_disk(args.root)
        report["sizes"].append(result)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        broker.flushdb()
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    by_size = {r["images"]: r for r in report["sizes"]}
    small, large = min(by_size), max(by_size)
    pixel = next(s for s in by_size[large]["generate"]["store"] if s["attack"].startswith("pixel"))
    fgsm = next(s for s in by_size[large]["generate"]["store"] if s["attack"].startswith("fgsm"))
    report["targets"] = {
        "peak_rss_any_process_below_4GB_at_largest": by_size[large]["peak_rss_any_process_bytes"] < 4 * 1024 ** 3,
        "peak_rss_within_20_percent_of_smallest": by_size[large]["peak_rss_any_process_bytes"]
        <= 1.2 * by_size[small]["peak_rss_any_process_bytes"],
        "merge_under_5_s_at_largest": by_size[large]["merge"]["seconds"] < 5,
        "one_pixel_at_most_64_bytes_per_example": pixel["bytes_per_example"] <= 64,
        "fgsm_at_least_3x_smaller_than_dense": fgsm["times_smaller_than_dense_float32"] >= 3,
        "evaluation_2_workers_at_least_1.8x_one": by_size[args.compare_size].get("evaluate_speedup_2_workers_vs_1", 0)
        >= 1.8,
    }
    text = json.dumps(report, indent=2)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
