"""`ferqueue run | compare | cross-eval | results | runs | report`: experiments and their results."""

from __future__ import annotations

from pathlib import Path

import click

from ferqueue import app
from ferqueue.cli import render
from ferqueue.cli.base import Output, RichProgress, console, main, output_options
from ferqueue.cli.options import (
    MODELS_HELP,
    experiment_options,
    robust_training_options,
    submit_flags,
    take_experiment_options,
    take_robust_options,
)
from ferqueue.cli.status import watch_job
from ferqueue.db import ledger, queries
from ferqueue.errors import ConfigError
from ferqueue.vocabulary import DONE, EVAL_SETTINGS, ONLINE_FGSM

# ---- the paper's pipeline: `run` is `submit pipeline --local` ---------------------------------


def pipeline_command(name: str, local_only: bool):
    """`run` (always here) and `submit pipeline` (on the workers unless --local): one command,
    one plan (ferqueue.app.plan_paper), two names."""

    def command(models, adv_epochs, store_eps, out: Output, local=True, quiet=False, **kwargs):
        options = take_experiment_options(kwargs)
        local = local or local_only
        rt = app.open_runtime(write=True, local=local)
        executor = app.executor_for(rt, local)
        with RichProgress(out.chatter, quiet=quiet) as bars:
            planned = app.plan_paper(rt, options, models, adv_epochs, store_eps, command=name,
                                     progress=bars.loading(Path(options.dataset).name))
            if not quiet:
                print_plan(planned, out.chatter)
            executor.progress = bars
            sent = app.dispatch(executor, planned.job.id)
        if quiet:
            click.echo(planned.job.id)
        elif not local:
            submitted(out, planned.job, sent)
        elif not out.as_table:
            render.echo_json({"job": ledger.job(rt.db, planned.job.id), "experiment": planned.experiment,
                              "runs": queries.training_runs(rt.db, planned.experiment.id),
                              "results": queries.results(rt.db, planned.experiment.id)})
        else:
            seconds = ledger.job(rt.db, planned.job.id).seconds
            console.print(f"pipeline job {planned.job.id} finished in {render.fmt(seconds, 1)} s")
            console.print(render.runs_table(queries.training_runs(rt.db, planned.experiment.id), out.wide))
            console.print(render.results_table(queries.results(rt.db, planned.experiment.id), out.wide))

    command = click.option("--store-eps", type=float, default=app.STORE_EPS, show_default=True,
                           help="Epsilon of the stored FGSM training examples (the paper: 0.01).")(command)
    command = click.option("--adv-epochs", type=int, help="Epochs of adversarial training. [same as --epochs]")(command)
    command = click.option("--models", help=MODELS_HELP)(command)
    command = experiment_options(command)
    command = output_options()(command)
    return command if local_only else submit_flags(command)


def submitted(out: Output, job, sent: list[str]) -> None:
    """What a command that sent a job to the workers prints: a line, or its JSON."""
    if out.as_table:
        console.print(f"job {job.id} ({job.kind}) submitted: {len(sent)} tasks enqueued; "
                      f"watch it with `ferqueue status {job.id} --watch`")
    else:
        render.echo_json({"job": job, "tasks": sent})


def print_plan(planned: app.Planned, console=console) -> None:
    facts, data, split = planned.facts, planned.dataset, planned.splits[0]
    console.print(f"[bold]experiment[/bold] {planned.experiment.name} (id {planned.experiment.id}), "
                  f"pipeline job {planned.job.id}")
    console.print(f"dataset {data.name}: {data.num_examples} images at {data.image_size}px, "
                  f"{len(data.class_names)} classes; {split.kind} split {split.n_train}/{split.n_test}; "
                  f"models {', '.join(facts['models'])}")
    console.print(f"store attacks {facts['store_attacks']}; evaluation attacks {len(facts['eval_attacks'])}; "
                  f"epochs {facts['epochs']} (+{facts['probe_epochs']} probe), adversarial epochs {facts['adv_epochs']}")


RUN_HELP = """Run the paper's four scenarios on the local executor and store the results.

    For each model: train a baseline and attack it; generate FGSM and one-pixel examples of
    the training images once and store them; adversarially train on original + stored
    examples; attack the hardened model again (white-box, re-run on that model). The same
    command as `ferqueue submit pipeline --local`.
    """
main.command(name="run", help=RUN_HELP)(pipeline_command("run", local_only=True))


# ---- compare and cross-eval ---------------------------------------------------------------------


@main.command()
@experiment_options
@click.option("--model", "model_name", help="One of mobilenetv2, edl, tiny_cnn. [synthetic: tiny_cnn; else mobilenetv2]")
@click.option("--adv-eps", type=float, default=0.01, show_default=True,
              help="FGSM epsilon of both adversarial trainings (stored once vs regenerated every batch).")
@click.option("--online", "online_modes", default=ONLINE_FGSM, show_default=True,
              help="Comma list of online modes: online_fgsm, online_fgsm_rs (FGSM with random start), n_fgsm, "
                   "pgd_at, trades.")
@robust_training_options
@click.option("--refresh-every", type=int, metavar="R",
              help="Also train refresh_adv: offline AT whose store is generated again against its current weights "
                   "every R epochs (a generation job each time, sharded on workers with --submit).")
@click.option("--refresh-attack", type=click.Choice(["pgd", "fgsm"]), default="pgd", show_default=True,
              help="refresh_adv: the attack of the regenerated stores (PGD of --adv-steps steps, at --adv-eps).")
@click.option("--folds", type=int, help="k-fold by subject: run every fold of a subject-disjoint k-fold split.")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="Also judge every model on test examples made once against the baseline.")
@click.option("--submit", is_flag=True,
              help="Run the steps on Celery workers (FERQUEUE_BROKER_URL) instead of in this process.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --submit: watch the job and print the tables when it ends (else print its id).")
@output_options()
def compare(model_name, adv_eps, online_modes, refresh_every, refresh_attack, folds, transfer, submit, wait,
            out: Output, **kwargs):
    """Baseline vs offline vs online adversarial training, side by side, with total compute.

    Same dataset, split, epochs and seed for all three. Offline stores FGSM examples of the
    training images once (the paper's method); online regenerates them every batch. Each model
    is attacked white-box (re-run on itself) and, labelled 'transfer', with fixed examples made
    against the baseline.
    """
    robust = take_robust_options(kwargs)
    options = take_experiment_options(kwargs)

    def make(rt, bars):
        planned = app.plan_compare(rt, options, model_name, adv_eps, online_modes, folds, transfer,
                                   progress=bars.loading(Path(options.dataset).name), robust=robust,
                                   refresh_every=refresh_every, refresh_attack=refresh_attack)
        return planned, (f"{len(planned.splits)} split(s) of {planned.dataset.name}, "
                         f"{planned.facts['n_steps']} steps")

    _run_experiment_job("compare", make, submit, wait, out, print_comparison)


def _run_experiment_job(kind: str, make, submit: bool, wait: bool, out: Output, show) -> None:
    """Plan (``make(rt, bars)`` -> (Planned, what it holds)), run here or send to the workers,
    watch it there if asked, then ``show(rt, experiment_id, out)``: compare's and sweep's course."""
    rt = app.open_runtime(write=True, local=not submit)
    executor = app.executor_for(rt, local=not submit)
    say = out.chatter
    with RichProgress(say) as bars:
        planned, holds = make(rt, bars)
        say.print(f"[bold]experiment[/bold] {planned.experiment.name} (id {planned.experiment.id}), {kind} job "
                  f"{planned.job.id}: {holds}")
        executor.progress = bars
        sent = app.dispatch(executor, planned.job.id)
    job_id = planned.job.id
    if submit:
        say.print(f"job {job_id} ({kind}) submitted: {len(sent)} tasks enqueued")
        if not wait:
            if out.as_table:
                say.print(f"results when it is done: `ferqueue results --experiment {planned.experiment.id} --compare`")
            else:
                submitted(out, planned.job, sent)
            return
        status = watch_job(rt, job_id, live=out.as_table)
        if status != DONE:
            raise click.ClickException(f"{kind} job {job_id} ended {status}; `ferqueue status {job_id}`")
    else:
        done = ledger.job(rt.db, job_id)
        if done.status != DONE:
            raise click.ClickException(f"{kind} job {job_id} ended {done.status}: {done.error}")
        say.print(f"{kind} job {job_id} finished in {render.fmt(done.seconds, 1)} s")
    show(rt, planned.experiment.id, out)


@main.command()
@experiment_options
@click.option("--model", "model_name", help="One of mobilenetv2, edl, tiny_cnn. [synthetic: tiny_cnn; else mobilenetv2]")
@click.option("--grid", required=True, metavar="KEY=V1,V2;...",
              help="Training settings to try, every combination: e.g. 'mode=standard,pgd_at;lr=0.001,0.003;"
                   "label_smoothing=0,0.1' (any field of a training's settings, and mode).")
@click.option("--submit", is_flag=True,
              help="Run the configurations on Celery workers (queue train) instead of in this process.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --submit: watch the job and print the ranking when it ends (else print its id).")
@output_options()
def sweep(model_name, grid, submit, wait, out: Output, **kwargs):
    """Train and evaluate one model per configuration of a grid, same split and seed, and rank them.

    Each configuration is a training job and a white-box evaluation job (the --eps, --pgd and
    --pixel-queries attacks), planned as one sweep job; `ferqueue results --experiment X --compare`
    ranks them again later.
    """
    options = take_experiment_options(kwargs)

    def make(rt, bars):
        planned = app.plan_sweep(rt, options, model_name, grid, progress=bars.loading(Path(options.dataset).name))
        return planned, f"{planned.facts['n_configs']} configurations of {planned.facts['model']}"

    _run_experiment_job("sweep", make, submit, wait, out, print_ranking)


def print_ranking(rt, experiment_id: int, out: Output, by: str | None = None) -> None:
    data = queries.ranking(rt.db, experiment_id, by)
    render.emit(out, data, lambda wide: render.ranking_table(data, wide))


def print_comparison(rt, experiment_id: int, out: Output) -> None:
    data = queries.comparison(rt.db, experiment_id)
    if not out.as_table:
        render.echo_json(data)
        return
    for made in render.comparison_tables(data, out.wide):
        console.print(made)


@main.command(name="cross-eval")
@click.option("--model", "artifact_id", type=int, required=True, help="Model artifact id (`ferqueue runs`).")
@click.option("--dataset", required=True, help="Another dataset: a CK+48-style folder, a FER2013 folder or CSV.")
@click.option("--split", "split_kind", type=click.Choice(["auto", "random", "subject", "predefined"]),
              default="auto", show_default=True, help="auto: the dataset's own test subset when it has one, "
              "else the paper's random split.")
@click.option("--subset", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--seed", type=int, default=app.SEED, show_default=True)
@click.option("--test-fraction", type=float, default=app.TEST_FRACTION, show_default=True)
@click.option("--eps", "eps_list", default=app.CROSS_EPSILONS, show_default=True,
              help="Epsilons of the white-box FGSM (and PGD) attacks; '' for clean only.")
@click.option("--pgd/--no-pgd", default=False, show_default=True)
@click.option("--pixel-queries", type=int, default=0, show_default=True, help="One-pixel random search budget.")
@click.option("--attack", "extra_attacks", multiple=True, metavar="SPEC", help="Another attack (repeatable).")
@click.option("--limit", type=int, help="Evaluate only the first N images of the subset.")
@click.option("--experiment", help="Experiment name. [cross-<model>-<dataset>-<time>]")
@click.option("--submit", is_flag=True, help="Run on Celery workers (FERQUEUE_BROKER_URL) instead of here.")
@output_options()
def cross_eval(artifact_id, dataset, split_kind, subset, seed, test_fraction, eps_list, pgd, pixel_queries,
               extra_attacks, limit, experiment, submit, out: Output):
    """Evaluate a trained model on another dataset, mapping classes by emotion.

    FER2013's angry and sad are scored as CK+'s anger and sadness, and so on. Images of a
    class the model does not know (FER2013's neutral for a CK+ model) are counted and
    reported, never scored or silently dropped; so is how often the model answers with a
    class the dataset lacks (CK+'s contempt on FER2013).
    """
    rt = app.open_runtime(write=True, local=not submit)
    executor = app.executor_for(rt, local=not submit)
    say = out.chatter
    with RichProgress(say) as bars:
        planned = app.plan_cross_eval(rt, artifact_id, dataset, split_kind, subset, seed, test_fraction, eps_list,
                                      pgd, pixel_queries, tuple(extra_attacks), limit, experiment,
                                      progress=bars.loading(Path(dataset).name))
        facts, artifact = planned.facts, planned.facts["artifact"]
        say.print(f"[bold]experiment[/bold] {planned.experiment.name} (id {planned.experiment.id}), evaluate job "
                  f"{planned.job.id}: model {artifact.architecture}#{artifact.id} on {planned.dataset.name} "
                  f"({facts['split_kind']} split, {subset} subset)")
        say.print("class mapping (dataset → model): "
                  + ", ".join(f"{d} → {m}" for d, m in facts["mapping"].items()))
        if facts["unmapped_dataset_classes"]:
            say.print(f"[yellow]not scored[/yellow] (no counterpart in the model): "
                      f"{', '.join(facts['unmapped_dataset_classes'])}")
        if facts["unmapped_model_classes"]:
            say.print(f"[yellow]model classes absent from the dataset[/yellow] (predicting one is an error): "
                      f"{', '.join(facts['unmapped_model_classes'])}")
        executor.progress = bars
        sent = app.dispatch(executor, planned.job.id)
    if submit:
        submitted(out, planned.job, sent)
        return
    say.print(f"evaluate job {planned.job.id} finished in "
              f"{render.fmt(ledger.job(rt.db, planned.job.id).seconds, 1)} s")
    record = queries.unmapped_record(rt.db, planned.experiment.id)
    if record:
        left = record["dataset_classes_without_counterpart"]
        say.print(f"scored {record['examples_scored']:,} images; left out {record['examples_left_out']:,}"
                  + (f" ({', '.join(f'{c}: {n:,}' for c, n in left.items())})" if left else ""))
        wrong = record.get("predicted_model_classes_without_counterpart") or {}
        if wrong:
            say.print("clean predictions of classes the dataset lacks: "
                      + ", ".join(f"{c}: {n:,}" for c, n in wrong.items()))
    rows = queries.results(rt.db, planned.experiment.id)
    if out.as_table:
        console.print(render.results_table(rows, out.wide))
    else:
        render.echo_json({"job": ledger.job(rt.db, planned.job.id), "experiment": planned.experiment,
                          "unmapped": record, "results": rows})


# ---- results --------------------------------------------------------------------------------------


@main.command()
@click.option("--experiment", help="Name or id; all experiments when left out.")
@click.option("--setting", type=click.Choice(EVAL_SETTINGS))
@click.option("--compare", "as_comparison", is_flag=True,
              help="With --experiment: the side-by-side tables of a `ferqueue compare` experiment, or a "
                   "`ferqueue sweep`'s configurations ranked.")
@click.option("--by", help="A sweep's ranking: the attack key (or 'clean') to rank by. [the first PGD attack]")
@output_options(("table", "json", "csv"))
def results(experiment, setting, as_comparison, by, out: Output):
    """Compare experiments: one row per model x training mode x attack x epsilon."""
    rt = app.open_runtime(write=False)
    exp = ledger.find_experiment(rt.db, experiment) if experiment else None
    exp_id = exp.id if exp else None
    if by is not None and not as_comparison:
        raise ConfigError("--by ranks a sweep: give it with --compare")
    if as_comparison:
        if exp_id is None:
            raise ConfigError("--compare needs --experiment NAME|ID")
        if out.fmt == "csv":
            raise ConfigError("--compare prints tables or JSON, not CSV")
        if (exp.config or {}).get("command") == "sweep":
            print_ranking(rt, exp_id, out, by)
        elif by is not None:
            raise ConfigError(f"--by ranks a sweep; experiment {exp.name} is not one")
        else:
            print_comparison(rt, exp_id, out)
        return
    rows = queries.results(rt.db, exp_id, setting)
    if out.fmt == "json":
        render.echo_json(rows)
    elif out.fmt == "csv":
        render.echo_csv(rows)
    elif rows:
        console.print(render.results_table(rows, out.wide))
    else:
        console.print("no evaluations yet")


@main.command()
@click.option("--experiment", help="Name or id; all experiments when left out.")
@output_options()
def runs(experiment, out: Output):
    """Training runs with parameter counts, time, compute and validation accuracy."""
    rt = app.open_runtime(write=False)
    exp_id = ledger.find_experiment(rt.db, experiment).id if experiment else None
    rows = queries.training_runs(rt.db, exp_id)
    render.emit(out, rows, lambda wide: render.runs_table(rows, wide))


@main.command()
@click.argument("target")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write. [reports/<experiment or run>]")
@click.option("--examples/--no-examples", default=True, show_default=True,
              help="Re-run FGSM and one-pixel on a few test images for the example grids.")
def report(target, out, examples):
    """Write PNG plots and a Markdown summary for an EXPERIMENT (name or id) or run:N."""
    from ferqueue.report import write_report

    rt = app.open_runtime(write=False)
    if target.startswith("run:"):
        run_id = int(target.removeprefix("run:")) if target.removeprefix("run:").isdigit() else None
        if run_id is None:
            raise ConfigError(f"{target!r} is not run:<id>")
        paths = write_report(rt, out or Path("reports") / f"run-{run_id}", run_id=run_id, examples=examples)
    else:
        paths = write_report(rt, out or Path("reports") / target, experiment=target, examples=examples)
    for path in paths:
        console.print(f"wrote {path}")
