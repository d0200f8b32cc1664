"""`ferqueue submit generate|train|evaluate|pipeline` and `ferqueue resume`: jobs on the workers.

``submit`` plans a job in the ledger, enqueues it and prints its id at once (``--local``:
runs it here); the SQL ledger is the source of truth that ``status`` reads and ``resume``
re-enqueues from.
"""

from __future__ import annotations

import click

from ferqueue import app
from ferqueue.cli import render
from ferqueue.cli.base import Output, RichProgress, console, err_console, main, output_options
from ferqueue.cli.experiments import pipeline_command, submitted
from ferqueue.cli.options import (
    data_options,
    job_argument,
    mode_option,
    robust_training_options,
    submit_flags,
    subset_option,
    take_robust_options,
)
from ferqueue.cli.status import print_status
from ferqueue.jobs import EvaluateSpec, GenerateSpec, TrainSpec


@main.group()
def submit() -> None:
    """Plan a job, enqueue it on the Celery workers and print its id."""


def _submit(local: bool, quiet: bool, experiment: str | None, out: Output, make_spec) -> None:
    """Plan the spec ``make_spec(rt)`` builds (after the broker is known to be there) and send it."""
    rt = app.open_runtime(write=True, local=local)
    executor = app.executor_for(rt, local)
    planned = app.plan_single(rt, make_spec(rt), experiment)
    job = planned.job
    if local:
        with RichProgress(err_console, quiet=quiet) as bars:
            executor.progress = bars
            app.dispatch(executor, job.id)
        if quiet:
            click.echo(job.id)
        else:
            print_status(rt, job.id, out)
        return
    sent = app.dispatch(executor, job.id)
    if quiet:
        click.echo(job.id)
    else:
        submitted(out, job, sent)


def _experiment_option(command):
    command = output_options()(command)
    return click.option("--experiment", help="Experiment name (created when new).")(submit_flags(command))


@submit.command("generate")
@click.option("--artifact", type=int, required=True, help="Id of the source model artifact.")
@data_options
@click.option("--attack", "attacks", multiple=True, required=True, metavar="SPEC",
              help="An attack, e.g. 'fgsm:eps=0.01' or 'pixel:k=1,method=de,maxiter=20' (repeatable).")
@subset_option("train")
@click.option("--shard-size", type=int, default=app.SHARD_SIZE, show_default=True, help="Images per shard task.")
@click.option("--limit", type=int, help="Attack only the first N images of the subset.")
@_experiment_option
def submit_generate(artifact, dataset, image_size, split, seed, test_fraction, attacks, subset, shard_size, limit,
                    experiment, local, quiet, out):
    """Generate adversarial examples, one task per shard, into a merged store."""
    def spec(rt):
        ds_row, split_row = app.dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
        return GenerateSpec(artifact_id=artifact, dataset_id=ds_row.id, split_id=split_row.id, attacks=list(attacks),
                            subset=subset, shard_size=shard_size, limit=limit)

    _submit(local, quiet, experiment, out, spec)


@submit.command("train")
@data_options
@click.option("--model", "architecture", required=True, help="mobilenetv2, edl or tiny_cnn.")
@mode_option()
@click.option("--store-job", type=int, help="Finished generation job whose store offline_adv trains on.")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--probe-epochs", type=int, default=0, show_default=True)
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--weights", type=click.Choice(["auto", "imagenet", "random"]), default="auto", show_default=True)
@click.option("--adv-eps", type=float, default=0.01, show_default=True,
              help="Online modes: the epsilon of the examples regenerated every batch.")
@click.option("--adv-weight", type=float, help="Online modes but trades: the adversarial share of the loss, in "
                                               "(0, 1]. [online_fgsm(_rs): 0.5; n_fgsm, pgd_at: 1]")
@robust_training_options
@_experiment_option
def submit_train(dataset, image_size, split, seed, test_fraction, architecture, mode, store_job, epochs,
                 probe_epochs, batch_size, lr, weights, adv_eps, adv_weight, experiment, local, quiet, out, **kwargs):
    """Train a model: standard, offline adversarial on a stored generation job, or online
    adversarial (FGSM, FGSM-RS, N-FGSM, PGD-AT, TRADES) regenerated every batch."""
    robust = take_robust_options(kwargs)

    def spec(rt):
        ds_row, split_row = app.dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
        return TrainSpec(dataset_id=ds_row.id, split_id=split_row.id, architecture=architecture, mode=mode,
                         train={"epochs": epochs, "probe_epochs": probe_epochs, "batch_size": batch_size, "lr": lr,
                                "seed": seed, "adv_eps": adv_eps, "adv_weight": adv_weight, **robust},
                         weights=weights, store_job_id=store_job)

    _submit(local, quiet, experiment, out, spec)


@submit.command("evaluate")
@click.option("--artifact", type=int, required=True, help="Id of the model artifact to evaluate.")
@data_options
@click.option("--attack", "attacks", multiple=True, metavar="SPEC", help="A white-box attack (repeatable).")
@subset_option("test")
@click.option("--transfer-store-job", type=int, help="Also score the stored examples of this generation job.")
@click.option("--limit", type=int, help="Evaluate only the first N images of the subset.")
@click.option("--shard-size", type=int, default=1024, show_default=True, help="Images per evaluation shard task.")
@_experiment_option
def submit_evaluate(artifact, dataset, image_size, split, seed, test_fraction, attacks, subset, transfer_store_job,
                    limit, shard_size, experiment, local, quiet, out):
    """Clean and attacked metrics of a model, written to the results tables."""
    def spec(rt):
        ds_row, split_row = app.dataset_and_split(rt, dataset, image_size, split, seed, test_fraction)
        return EvaluateSpec(artifact_id=artifact, dataset_id=ds_row.id, split_id=split_row.id, attacks=list(attacks),
                            subset=subset, transfer_store_job_id=transfer_store_job, limit=limit, shard_size=shard_size)

    _submit(local, quiet, experiment, out, spec)


submit.command("pipeline", help="""The paper's four scenarios as jobs on the workers (`ferqueue run`, sent).""")(
    pipeline_command("submit pipeline", local_only=False))


@main.command()
@job_argument
@click.option("--local", is_flag=True, help="Finish the job in this process instead of on Celery workers.")
@output_options()
def resume(job_id, local, out: Output):
    """Re-enqueue what the ledger says is unfinished (after a broker loss, a crash or a cancel).

    Failed and cancelled jobs reopen; pending, failed and lost shards, a merge stuck in
    'merging' and ready pipeline steps are sent again. Work a live worker holds is not resent;
    anything resent twice is a no-op, as finished shards are never redone.
    """
    rt = app.open_runtime(write=False, local=local)
    executor = app.executor_for(rt, local)  # refuses first when there is no broker to resume on
    reopened, repaired = app.reopen(rt, job_id)
    for line in repaired:
        out.chatter.print(f"[yellow]reset[/yellow] {line}")
    if local:
        with RichProgress(err_console) as bars:
            executor.progress = bars
            app.resend(executor, job_id)
        print_status(rt, job_id, out)
        return
    sent, held = app.resend(executor, job_id)
    if not out.as_table:
        render.echo_json({"job_id": job_id, "reopened": reopened, "reset": repaired, "tasks": sent, "held": held})
        return
    console.print(f"job {job_id}: reopened {len(reopened)} jobs, re-enqueued {len(sent)} tasks"
                  f" ({held} tasks still held by live workers)")
