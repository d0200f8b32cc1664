"""`ferqueue submit|status|cancel|resume|worker|flower`: jobs on Celery workers.

``submit`` plans a job in the ledger, enqueues it and prints its id at once; the SQL ledger
is the source of truth that ``status`` reads and ``resume`` re-enqueues from. ``register``
adds these commands to the main ``ferqueue`` group (ferqueue/cli.py).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import click

from ferqueue.errors import ConfigError

FINAL_STATES = ("done", "failed", "cancelled")


def _base():
    # ferqueue.cli registers this module at its end: import it lazily to avoid a cycle
    from ferqueue import cli

    return cli


# ---- submit -------------------------------------------------------------------------------

def _data_options(fn):
    for option in reversed((
        click.option("--dataset", required=True,
                     help="A dataset id, or 'synthetic[:N]', a CK+48 folder, a FER2013 folder or CSV."),
        click.option("--image-size", type=int, help="Side of the square input. [synthetic: 48; else 75]"),
        click.option("--split", "split", default="random", show_default=True,
                     help="A split id, or a split kind: random, subject, predefined."),
        click.option("--seed", type=int, default=42, show_default=True, help="Seed of a new split."),
        click.option("--test-fraction", type=float, default=0.2, show_default=True),
    )):
        fn = option(fn)
    return fn


def _submit_flags(fn):
    fn = click.option("--local", is_flag=True, help="Run the job in this process instead of on Celery workers.")(fn)
    return click.option("--quiet", "-q", is_flag=True, help="Print only the job id.")(fn)


def _submit_options(fn):
    return click.option("--experiment", help="Experiment name (created when new).")(_submit_flags(fn))


def _dataset_and_split(rt, dataset: str, image_size: int | None, split: str, seed: int, test_fraction: float):
    """Ledger rows of a dataset (id or spec) and split (id or kind), registered when new."""
    from ferqueue import ledger
    from ferqueue.data import load_dataset, make_split
    from ferqueue.db.models import DatasetRow, SplitRow

    cli = _base()
    if dataset.isdigit():
        ds_row = ledger.get(rt.db, DatasetRow, int(dataset))
        if image_size is not None and image_size != ds_row.image_size:
            raise ConfigError(f"dataset {dataset} is registered at {ds_row.image_size}px, not --image-size {image_size}")
        data = None
    else:
        defaults = cli.SYNTHETIC_DEFAULTS if dataset.split(":")[0] == "synthetic" else cli.REAL_DEFAULTS
        data = load_dataset(dataset, image_size or defaults["image_size"], cache_dir=rt.settings.cache_dir)
        ds_row = rt.register_dataset(data)
    if split.isdigit():
        split_row = ledger.get(rt.db, SplitRow, int(split))
        if split_row.dataset_id != ds_row.id:
            raise ConfigError(f"split {split} belongs to dataset {split_row.dataset_id}, not {ds_row.id}")
        return ds_row, split_row
    data = data or rt.dataset(ds_row)
    made = make_split(data, split, test_fraction=test_fraction, seed=seed)
    return ds_row, rt.register_split(ds_row.id, made)


def _artifact_for(rt, artifact_id: int, ds_row):
    """The artifact, refused up front when it cannot take the dataset's images."""
    from ferqueue import ledger
    from ferqueue.db.models import ModelArtifact

    artifact = ledger.get(rt.db, ModelArtifact, artifact_id)
    if artifact.image_size != ds_row.image_size:
        raise ConfigError(f"model {artifact_id} takes {artifact.image_size}px images, dataset {ds_row.id} is "
                          f"{ds_row.image_size}px: pass --image-size {artifact.image_size}")
    if list(artifact.class_names) != list(ds_row.class_names):
        raise ConfigError(f"model {artifact_id} predicts {artifact.class_names}, dataset {ds_row.id} has "
                          f"{ds_row.class_names}")
    return artifact


def _experiment_id(rt, name: str | None, config: dict | None = None) -> int | None:
    from ferqueue import ledger

    return ledger.get_or_create_experiment(rt.db, name, config=config).id if name else None


def _submitter(local: bool):
    """(runtime, executor), refusing before anything is planned when no broker is configured."""
    from ferqueue.executors import executor_for
    from ferqueue.runtime import Runtime

    rt = _base()._runtime()
    if local and rt.settings.broker_url:  # the ledger records the executor that really runs the job
        rt = Runtime(rt.settings.with_overrides(broker_url=None, result_backend=None))
    executor = executor_for(rt, local)
    if not local:
        with _broker_errors(rt, "nothing was submitted"):
            executor.check_connection()
    return rt, executor


@contextmanager
def _broker_errors(rt, what: str) -> Iterator[None]:
    """An unreachable broker or result backend as one clear line, its password masked."""
    from kombu.exceptions import OperationalError
    from kombu.utils.url import maybe_sanitize_url
    from redis.exceptions import ConnectionError as RedisConnectionError

    try:
        yield
    except (OperationalError, RedisConnectionError, RuntimeError) as exc:
        # Celery's Redis result consumer gives up with a RuntimeError caused by the connection error
        if isinstance(exc, RuntimeError) and not isinstance(exc.__cause__, (RedisConnectionError, OSError)):
            raise
        cause = exc.__cause__ if isinstance(exc, RuntimeError) else exc
        raise click.ClickException(f"{what}: the broker at {maybe_sanitize_url(rt.settings.broker_url)} or the "
                                   f"result backend is unreachable ({cause})") from None


def _dispatch(executor, job, quiet: bool) -> None:
    """Send a planned job to its executor and say where it went."""
    cli = _base()
    rt = executor.rt
    if executor.name == "local":
        with cli.RichProgress(cli.err_console) as bars:
            executor.progress = bars
            executor.run(job.id)
        if quiet:
            click.echo(job.id)
        else:
            cli.console.print(_status_view(rt, job.id)[0])
        return
    with _broker_errors(rt, f"job {job.id} is recorded but not (fully) enqueued; `ferqueue resume {job.id}` "
                            "once the broker is back"):
        sent = executor.submit(job.id)
    if quiet:
        click.echo(job.id)
    else:
        cli.console.print(f"job {job.id} ({job.kind}) submitted: {len(sent)} tasks enqueued; "
                          f"watch it with `ferqueue status {job.id} --watch`")


@click.group()
def submit() -> None:
    """Plan a job, enqueue it on the Celery workers and print its id."""


@submit.command("generate")
@click.option("--artifact", type=int, required=True, help="Id of the source model artifact.")
@_data_options
@click.option("--attack", "attacks", multiple=True, required=True, metavar="SPEC",
              help="An attack, e.g. 'fgsm:eps=0.01' or 'pixel:k=1,method=de,maxiter=20' (repeatable).")
@click.option("--subset", type=click.Choice(["train", "test"]), default="train", show_default=True)
@click.option("--shard-size", type=int, default=256, show_default=True, help="Images per shard task.")
@click.option("--limit", type=int, help="Attack only the first N images of the subset.")
@_submit_options
def submit_generate(artifact, dataset, image_size, split, seed, test_fraction, attacks, subset, shard_size, limit,
                    experiment, local, quiet):
    """Generate adversarial examples, one task per shard, into a merged store."""
    from ferqueue import jobs

    rt, executor = _submitter(local)
    ds_row, split_row = _dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
    _artifact_for(rt, artifact, ds_row)
    job = jobs.plan_generate(rt, artifact_id=artifact, dataset_id=ds_row.id, split_id=split_row.id,
                             attacks=list(attacks), subset=subset, shard_size=shard_size, limit=limit,
                             experiment_id=_experiment_id(rt, experiment))
    _dispatch(executor, job, quiet)


@submit.command("train")
@_data_options
@click.option("--model", "architecture", required=True, help="mobilenetv2, edl or tiny_cnn.")
@click.option("--mode", type=click.Choice(["standard", "offline_adv", "online_fgsm", "online_fgsm_rs"]),
              default="standard", show_default=True)
@click.option("--store-job", type=int, help="Finished generation job whose store offline_adv trains on.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--probe-epochs", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weights", type=click.Choice(["auto", "imagenet", "random"]), default="auto", show_default=True)
@_submit_options
def submit_train(dataset, image_size, split, seed, test_fraction, architecture, mode, store_job, epochs,
                 probe_epochs, batch_size, lr, weights, experiment, local, quiet):
    """Train a model (standard, or adversarially on a stored generation job)."""
    from ferqueue import jobs

    rt, executor = _submitter(local)
    ds_row, split_row = _dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
    job = jobs.plan_train(rt, dataset_id=ds_row.id, split_id=split_row.id, architecture=architecture, mode=mode,
                          train={"epochs": epochs, "probe_epochs": probe_epochs, "batch_size": batch_size,
                                 "lr": lr, "seed": seed},
                          weights=weights, store_job_id=store_job, experiment_id=_experiment_id(rt, experiment))
    _dispatch(executor, job, quiet)


@submit.command("evaluate")
@click.option("--artifact", type=int, required=True, help="Id of the model artifact to evaluate.")
@_data_options
@click.option("--attack", "attacks", multiple=True, metavar="SPEC", help="A white-box attack (repeatable).")
@click.option("--subset", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--transfer-store-job", type=int, help="Also score the stored examples of this generation job.")
@click.option("--limit", type=int, help="Evaluate only the first N images of the subset.")
@_submit_options
def submit_evaluate(artifact, dataset, image_size, split, seed, test_fraction, attacks, subset, transfer_store_job,
                    limit, experiment, local, quiet):
    """Clean and attacked metrics of a model, written to the results tables."""
    from ferqueue import jobs

    rt, executor = _submitter(local)
    ds_row, split_row = _dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
    _artifact_for(rt, artifact, ds_row)
    job = jobs.plan_evaluate(rt, artifact_id=artifact, dataset_id=ds_row.id, split_id=split_row.id,
                             attacks=list(attacks), subset=subset, transfer_store_job_id=transfer_store_job,
                             limit=limit, experiment_id=_experiment_id(rt, experiment))
    _dispatch(executor, job, quiet)


def _pipeline_command(cli) -> click.Command:
    """`submit pipeline`, built when registered: it takes `ferqueue run`'s own option set."""

    @click.command("pipeline")
    @cli.shared_options
    @click.option("--models", help="Comma list of mobilenetv2, edl, tiny_cnn. [synthetic: tiny_cnn; else mobilenetv2]")
    @click.option("--adv-epochs", type=int, help="Epochs of adversarial training. [same as --epochs]")
    @click.option("--store-eps", type=float, default=0.01, show_default=True,
                  help="Epsilon of the stored FGSM training examples (the paper: 0.01).")
    @_submit_flags
    def submit_pipeline(models, adv_epochs, store_eps, local, quiet, **opts):
        """The paper's four scenarios, as `ferqueue run` plans them, as jobs on the workers."""
        from ferqueue import jobs
        from ferqueue.attacks import parse_attack
        from ferqueue.pipeline import PaperPlan
        from ferqueue.train import TrainConfig

        plan_opts = cli._resolve(opts, models)  # run's defaults and checks
        train = plan_opts["train"]
        adv_train = {**train, "epochs": train["epochs"] if adv_epochs is None else adv_epochs}
        store_attacks = [f"fgsm:eps={store_eps:g}", *cli._pixel_spec(opts)]
        for spec in store_attacks:  # a bad --store-eps fails here, before anything is recorded
            parse_attack(spec)
        TrainConfig(mode="offline_adv", **adv_train)  # and so does a bad --adv-epochs

        rt, executor = _submitter(local)
        ds_row, split_row = _dataset_and_split(rt, opts["dataset"], opts["image_size"],
                                               opts["split_kind"], opts["seed"], opts["test_fraction"])
        plan = PaperPlan(models=plan_opts["models"], dataset_id=ds_row.id, split_id=split_row.id, train=train,
                         adv_train=adv_train, weights=opts["weights"], eval_attacks=plan_opts["eval_attacks"],
                         store_attacks=store_attacks, shard_size=opts["shard_size"],
                         eval_limit=opts["eval_limit"])
        name = opts["experiment"] or f"{ds_row.name}-{opts['split_kind']}-{datetime.now():%Y%m%d-%H%M%S}"
        exp_id = _experiment_id(rt, name, config={
            "command": "submit pipeline", "dataset": ds_row.source, "models": plan_opts["models"],
            "train": train, "adv_train": adv_train, "eval_attacks": plan_opts["eval_attacks"],
            "store_attacks": plan.store_attacks})
        _dispatch(executor, jobs.plan_pipeline(rt, plan.steps(), experiment_id=exp_id), quiet)

    return submit_pipeline


# ---- status, cancel, resume ----------------------------------------------------------------

def _ago(moment: datetime | None, until: datetime | None = None) -> str:
    from ferqueue.ledger import now

    if moment is None:
        return "-"
    return f"{((until or now()) - moment).total_seconds():.1f}"


def _status_view(rt, job_id: int):
    """(renderable, finished) for one job: a progress bar over shards or steps and a table."""
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from ferqueue import ledger
    from ferqueue.db.models import Job

    job = ledger.get(rt.db, Job, job_id)
    title = f"job {job.id}: {job.kind}, {job.status}" + (f" — {job.error}" if job.error else "")
    table = Table(title=title)
    if job.kind == "generate":
        rows = ledger.shards(rt.db, job_id)
        done, total = sum(s.status == "done" for s in rows), len(rows)
        for col in ("shard", "attack", "range", "status", "attempts", "worker", "seconds", "success"):
            table.add_column(col)
        for s in rows:
            # a running shard shows how long its current attempt has been going
            seconds = f"{s.seconds:.1f}" if s.seconds is not None else _ago(s.started_at) if s.status == "running" else "-"
            table.add_row(str(s.index), s.attack_key, f"{s.start}:{s.stop}", s.status, str(s.attempts),
                          s.worker or "-", seconds,
                          f"{s.n_success}/{s.n_examples}" if s.n_examples is not None else "-")
        unit = "shards"
    else:
        kids = ledger.children(rt.db, job_id)
        steps = job.spec.get("steps") or [job]
        done, total = sum(k.status == "done" for k in kids) if kids else int(job.status == "done"), len(steps)
        for col in ("job", "step", "kind", "status", "progress", "seconds", "result"):
            table.add_column(col)
        for kid in kids or [job]:
            progress = "-"
            if kid.kind == "generate":
                finished = sum(s.status == "done" for s in ledger.shards(rt.db, kid.id))
                progress = f"{finished}/{kid.n_shards} shards"
            outcome = kid.error or (str(kid.result)[:60] if kid.result else "")
            table.add_row(str(kid.id), kid.step or "-", kid.kind, kid.status, progress,
                          _ago(kid.started_at, kid.finished_at), outcome)
        unit = "steps"
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(total, 1), completed=done, width=40), f"{done}/{total} {unit}",
                f"{_ago(job.started_at, job.finished_at)} s")
    return Group(bar, table), job.status in FINAL_STATES


def watch_job(rt, job_id: int, interval: float = 1.0) -> str:
    """Keep the job's status view live until it ends; returns its final status."""
    from rich.live import Live

    from ferqueue import ledger
    from ferqueue.db.models import Job

    cli = _base()
    view, finished = _status_view(rt, job_id)
    with Live(view, console=cli.console, refresh_per_second=4) as live:
        while not finished:
            time.sleep(interval)
            view, finished = _status_view(rt, job_id)
            live.update(view)
    return ledger.get(rt.db, Job, job_id).status


@click.command()
@click.argument("job_id", type=int)
@click.option("--watch", "-w", is_flag=True, help="Keep the view live until the job finishes.")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between refreshes.")
def status(job_id, watch, interval):
    """Per-shard (or per-step) progress of a job."""
    cli = _base()
    rt = cli._runtime()
    if not watch:
        cli.console.print(_status_view(rt, job_id)[0])
        return
    final = watch_job(rt, job_id, interval)
    if final != "done":
        raise click.ClickException(f"job {job_id} ended {final}")


@click.command()
@click.argument("job_id", type=int)
def cancel(job_id):
    """Cancel a job, its unfinished shards and its pipeline steps; queued tasks become no-ops."""
    from ferqueue import ledger

    cli = _base()
    changed = ledger.cancel_job(cli._runtime().db, job_id)
    cli.console.print(f"job {job_id}: {changed} jobs and shards cancelled" if changed
                      else f"job {job_id} had nothing left to cancel")


@click.command()
@click.argument("job_id", type=int)
@click.option("--local", is_flag=True, help="Finish the job in this process instead of on Celery workers.")
def resume(job_id, local):
    """Re-enqueue what the ledger says is unfinished (after a broker loss, a crash or a cancel).

    Failed and cancelled jobs reopen; pending, failed and lost shards, a merge stuck in
    'merging' and ready pipeline steps are sent again. Work a live worker holds is not resent;
    anything resent twice is a no-op, as finished shards are never redone.
    """
    from ferqueue import ledger
    from ferqueue.db.models import Job
    from ferqueue.executors import executor_for

    cli = _base()
    rt = cli._runtime()
    executor = executor_for(rt, local)  # refuses first when there is no broker to resume on
    ledger.get(rt.db, Job, job_id)  # a clear error for an unknown id before anything changes
    reopened = ledger.reopen_tree(rt.db, job_id)
    if local:
        with cli.RichProgress(cli.err_console) as bars:
            executor.progress = bars
            executor.run(job_id)
        cli.console.print(_status_view(rt, job_id)[0])
        return
    with _broker_errors(rt, f"job {job_id} could not be resumed"):
        held = executor.in_flight()
        sent = executor.submit(job_id, held)
    cli.console.print(f"job {job_id}: reopened {len(reopened)} jobs, re-enqueued {len(sent)} tasks"
                      f" ({len(held)} tasks still held by live workers)")


# ---- processes: worker and flower ------------------------------------------------------------

def _celery_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "workers.celery_app", *args]


def _require_broker():
    from ferqueue.config import load_settings

    settings = load_settings()
    if not settings.broker_url:
        raise ConfigError("FERQUEUE_BROKER_URL is not set: workers and Flower need the Redis broker "
                          "(e.g. redis://:password@localhost:6379/0)")
    return settings


@click.command()
@click.option("--queues", "-Q", default="generate,train,evaluate", show_default=True,
              help="Comma list of queues to consume: generate, train, evaluate.")
@click.option("--concurrency", "-c", type=int, default=1, show_default=True, help="Pool child processes.")
@click.option("--tf-threads", type=int, help="TensorFlow threads per child (sets FERQUEUE_TF_THREADS).")
@click.option("--hostname", "-n", help="Node name. [celery's default: celery@<host>]")
@click.option("--loglevel", "-l", default="info", show_default=True)
@click.option("--max-tasks-per-child", type=int, help="Replace a child after N tasks.")
@click.option("--dry-run", is_flag=True, help="Print the celery command line instead of running it.")
def worker(queues, concurrency, tf_threads, hostname, loglevel, max_tasks_per_child, dry_run):
    """Start a Celery worker (events on, for Flower) on the given queues."""
    from workers.celery_app import QUEUES

    _require_broker()
    names = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUEUES]
    if unknown or not names:
        raise ConfigError(f"unknown queue {', '.join(unknown) or repr(queues)}; choose from {', '.join(QUEUES)}")
    if concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, got {concurrency}")
    argv = _celery_argv("worker", "-E", "-Q", ",".join(names), "-c", str(concurrency), "-l", loglevel)
    if hostname:
        argv += ["-n", hostname]
    if max_tasks_per_child:
        argv += ["--max-tasks-per-child", str(max_tasks_per_child)]
    if tf_threads is not None:
        os.environ["FERQUEUE_TF_THREADS"] = str(tf_threads)
    if dry_run:
        click.echo(" ".join(argv))
        return
    os.execv(argv[0], argv)  # the worker replaces this process: signals reach Celery directly


@click.command()
@click.option("--port", type=int, default=5555, show_default=True)
@click.option("--address", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--no-auth", is_flag=True, help="Serve Flower without a password (only on a trusted machine).")
@click.option("--dry-run", is_flag=True, help="Print the celery command line instead of running it.")
def flower(port, address, no_auth, dry_run):
    """Start Flower with basic auth from FERQUEUE_FLOWER_USER / FERQUEUE_FLOWER_PASSWORD."""
    settings = _require_broker()
    os.environ.pop("FLOWER_BASIC_AUTH", None)
    if not no_auth:
        user, password = settings.flower_user, settings.flower_password
        if not user or not password:
            raise ConfigError("Flower needs basic auth: set FERQUEUE_FLOWER_USER and FERQUEUE_FLOWER_PASSWORD "
                              "(or pass --no-auth on a trusted machine)")
        if ":" in user or "," in user + password:
            raise ConfigError(f"FERQUEUE_FLOWER_USER {user!r} must not contain ':' and neither value may contain ','")
        # through the environment, not argv: a password on the command line shows in `ps`
        os.environ["FLOWER_BASIC_AUTH"] = f"{user}:{password}"
    argv = _celery_argv("flower", f"--port={port}", f"--address={address}")
    if dry_run:
        click.echo(" ".join(argv) + ("" if no_auth else "  (basic auth from FLOWER_BASIC_AUTH)"))
        return
    os.execv(argv[0], argv)


def register(main: click.Group) -> None:
    """Add the queue commands to the ``ferqueue`` group (called at the end of ferqueue/cli.py)."""
    submit.add_command(_pipeline_command(_base()))
    for command in (submit, status, cancel, resume, worker, flower):
        main.add_command(command)
