"""`ferqueue ...`: the command line."""

from __future__ import annotations

import csv
import json
import os
import sys
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import click  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import (  # noqa: E402
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table  # noqa: E402

from ferqueue.errors import ConfigError, FerqueueError  # noqa: E402

# Off a terminal rich would wrap tables at 80 columns; results tables need more.
_width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "180"))
console = Console(width=_width)
err_console = Console(stderr=True, width=_width)


class FerqueueGroup(click.Group):
    """Turns ferqueue's own errors into one clear line and exit status 1."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FerqueueError as exc:
            raise click.ClickException(str(exc)) from None


class RichProgress:
    """A ``(label, done, total)`` callback drawing one bar per label."""

    def __init__(self, console: Console):
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description:<42}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console)
        self.tasks: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if label not in self.tasks:
            self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(self.tasks[label], completed=done, total=total)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()


def _runtime():
    from ferqueue.runtime import Runtime

    return Runtime()


def _float_list(value: str, what: str) -> list[float]:
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            number = float(part)
        except ValueError:
            raise ConfigError(f"{what} {part!r} is not a number") from None
        if not 0 < number <= 1:
            raise ConfigError(f"{what} {number:g} is outside (0, 1]")
        out.append(number)
    return out


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


@click.group(cls=FerqueueGroup)
@click.version_option(package_name="ferqueue")
def main() -> None:
    """ferqueue: measure and harden facial-expression-recognition models against adversarial attacks."""


# ---- run and compare ----------------------------------------------------------------------

# Measured: tiny_cnn on 700 synthetic faces at 48px reaches 0.86-0.97 test accuracy in 20 epochs of
# batch 16 (19 s); 12 epochs of batch 32 leave it at 0.56.
SYNTHETIC_DEFAULTS = {"models": "tiny_cnn", "image_size": 48, "epochs": 20, "probe_epochs": 0, "lr": 3e-3,
                      "batch_size": 16}
REAL_DEFAULTS = {"models": "mobilenetv2", "image_size": 75, "epochs": 10, "probe_epochs": 100, "lr": 1e-3,
                 "batch_size": 32}

_SHARED_OPTIONS = [
    click.option("--dataset", default="synthetic", show_default=True,
                 help="'synthetic', 'synthetic:N', a CK+48-style folder, a FER2013 folder or a FER2013 CSV."),
    click.option("--image-size", type=int, help="Side of the square input. [synthetic: 48; else 75]"),
    click.option("--split", "split_kind", type=click.Choice(["random", "subject", "predefined"]), default="random",
                 show_default=True, help="random: the paper's stratified 80:20; subject: subject-disjoint."),
    click.option("--test-fraction", type=float, default=0.2, show_default=True),
    click.option("--seed", type=int, default=42, show_default=True),
    click.option("--epochs", type=int,
                 help="Training epochs (fine-tuning epochs for ImageNet models). [synthetic: 20; else 10]"),
    click.option("--probe-epochs", type=int,
                 help="Head-only epochs on frozen features before fine-tuning. [synthetic: 0; else 100]"),
    click.option("--lr", type=float, help="Learning rate of the head (or of a model without backbone). [1e-3]"),
    click.option("--fine-tune-lr", type=float, default=3e-5, show_default=True),
    click.option("--batch-size", type=int, help="[synthetic: 16; else 32, as the paper]"),
    click.option("--weights", type=click.Choice(["auto", "imagenet", "random"]), default="auto", show_default=True,
                 help="auto: ImageNet weights when found under KERAS_HOME, otherwise random with a warning."),
    click.option("--eps", "eps_list", default="0.01,0.02,0.03,0.04,0.05", show_default=True,
                 help="Epsilons of the FGSM/PGD evaluation attacks, in (0, 1]."),
    click.option("--pixel-queries", type=int, default=100, show_default=True,
                 help="Budget of the one-pixel attack: queries (random) or generations (de); 0: none."),
    click.option("--pixel-method", type=click.Choice(["random", "de"]), default="random", show_default=True),
    click.option("--pgd/--no-pgd", default=True, show_default=True, help="Also evaluate with PGD (10 steps)."),
    click.option("--attack", "extra_attacks", multiple=True, metavar="SPEC",
                 help="Another evaluation attack, e.g. 'pixel:k=1,method=de,maxiter=100' (repeatable)."),
    click.option("--shard-size", type=int, default=256, show_default=True),
    click.option("--eval-limit", type=int, help="Attack only the first N test images."),
    click.option("--experiment", help="Experiment name. [<dataset>-<split>-<time>]"),
]


def shared_options(command):
    for option in reversed(_SHARED_OPTIONS):
        command = option(command)
    return command


def _resolve(opts: dict, models: str | None, mode_models_default: bool = True) -> dict:
    """Fill dataset-dependent defaults and check every value before any data is loaded."""
    from ferqueue.attacks import parse_attack
    from ferqueue.models import MODEL_NAMES
    from ferqueue.pipeline import eval_attack_specs
    from ferqueue.train import TrainConfig

    defaults = SYNTHETIC_DEFAULTS if opts["dataset"].split(":")[0] == "synthetic" else REAL_DEFAULTS
    names = [m.strip() for m in (models or defaults["models"]).split(",") if m.strip()]
    for name in names:
        if name not in MODEL_NAMES:
            raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    epsilons = _float_list(opts["eps_list"], "epsilon")
    if opts["pixel_queries"] < 0:
        raise ConfigError(f"--pixel-queries must not be negative, got {opts['pixel_queries']}")
    epochs = defaults["epochs"] if opts["epochs"] is None else opts["epochs"]
    probe = defaults["probe_epochs"] if opts["probe_epochs"] is None else opts["probe_epochs"]
    train = TrainConfig(epochs=epochs, probe_epochs=probe, lr=opts["lr"] or defaults["lr"],
                        fine_tune_lr=opts["fine_tune_lr"], batch_size=opts["batch_size"] or defaults["batch_size"],
                        seed=opts["seed"])
    eval_attacks = eval_attack_specs(epsilons, opts["pixel_queries"], opts["pgd"], opts["pixel_method"])
    eval_attacks += list(opts["extra_attacks"])
    for spec in eval_attacks:  # refuse a bad spec before any data is loaded
        parse_attack(spec)
    return {"models": names, "epsilons": epsilons, "image_size": opts["image_size"] or defaults["image_size"],
            "train": {k: v for k, v in train.to_dict().items() if k != "mode"}, "eval_attacks": eval_attacks}


def _pixel_spec(opts: dict) -> list[str]:
    if not opts["pixel_queries"]:
        return []
    budget = "queries" if opts["pixel_method"] == "random" else "maxiter"
    return [f"pixel:k=1,method={opts['pixel_method']},{budget}={opts['pixel_queries']}"]


def _runtime_and_executor(submit: bool):
    """(runtime, Celery executor) with --submit, refused before any planning when the broker
    is down; (runtime, None) to run in this process."""
    if not submit:
        return _runtime(), None
    from ferqueue.cli_queue import _submitter

    return _submitter(local=False)


def _load_registered(rt, opts: dict, image_size: int):
    from ferqueue.data import load_dataset

    with RichProgress(console) as bars:
        data = load_dataset(opts["dataset"], image_size, cache_dir=rt.settings.cache_dir,
                            progress=lambda d, t: bars("load " + Path(opts["dataset"]).name, d, t))
    return data, rt.register_dataset(data)


def _execute(rt, job_id: int) -> float:
    from ferqueue import jobs

    started = time.perf_counter()
    with RichProgress(console) as bars:
        jobs.LocalExecutor(rt, bars).run(job_id)
    return time.perf_counter() - started


@main.command()
@shared_options
@click.option("--models", help="Comma list of mobilenetv2, edl, tiny_cnn. [synthetic: tiny_cnn; else mobilenetv2]")
@click.option("--adv-epochs", type=int, help="Epochs of adversarial training. [same as --epochs]")
@click.option("--store-eps", type=float, default=0.01, show_default=True,
              help="Epsilon of the stored FGSM training examples (the paper: 0.01).")
def run(models, adv_epochs, store_eps, **opts):
    """Run the paper's four scenarios on the local executor and store the results.

    For each model: train a baseline and attack it; generate FGSM and one-pixel examples of
    the training images once and store them; adversarially train on original + stored
    examples; attack the hardened model again (white-box, re-run on that model).
    """
    from ferqueue import jobs, ledger
    from ferqueue.data import make_split
    from ferqueue.pipeline import PaperPlan

    plan_opts = _resolve(opts, models)
    if not 0 < store_eps <= 1:
        raise ConfigError(f"epsilon {store_eps:g} is outside (0, 1]")
    store_attacks = [f"fgsm:eps={store_eps:g}", *_pixel_spec(opts)]
    adv_train = {**plan_opts["train"], "epochs": plan_opts["train"]["epochs"] if adv_epochs is None else adv_epochs}

    rt = _runtime()
    data, ds_row = _load_registered(rt, opts, plan_opts["image_size"])
    split = make_split(data, opts["split_kind"], test_fraction=opts["test_fraction"], seed=opts["seed"])
    split_row = rt.register_split(ds_row.id, split)
    name = opts["experiment"] or f"{data.name}-{opts['split_kind']}-{datetime.now():%Y%m%d-%H%M%S}"
    exp = ledger.get_or_create_experiment(rt.db, name, config={
        "command": "run", "dataset": data.source, "models": plan_opts["models"], "split": split.describe(),
        "train": plan_opts["train"], "adv_train": adv_train, "eval_attacks": plan_opts["eval_attacks"],
        "store_attacks": store_attacks})
    plan = PaperPlan(models=plan_opts["models"], dataset_id=ds_row.id, split_id=split_row.id,
                     train=plan_opts["train"], adv_train=adv_train, weights=opts["weights"],
                     eval_attacks=plan_opts["eval_attacks"], store_attacks=store_attacks,
                     shard_size=opts["shard_size"], eval_limit=opts["eval_limit"])
    pipeline = jobs.plan_pipeline(rt, plan.steps(), experiment_id=exp.id)
    console.print(f"[bold]experiment[/bold] {name} (id {exp.id}), pipeline job {pipeline.id}")
    console.print(f"dataset {data.name}: {len(data)} images at {data.image_size}px, {len(data.class_names)} classes; "
                  f"{opts['split_kind']} split {len(split.train)}/{len(split.test)}; "
                  f"models {', '.join(plan_opts['models'])}")
    console.print(f"store attacks {store_attacks}; evaluation attacks {len(plan_opts['eval_attacks'])}; "
                  f"epochs {plan_opts['train']['epochs']} (+{plan_opts['train']['probe_epochs']} probe), "
                  f"adversarial epochs {adv_train['epochs']}")
    seconds = _execute(rt, pipeline.id)
    console.print(f"pipeline job {pipeline.id} finished in {seconds:.1f} s")
    _print_runs(rt, exp.id)
    _print_results(rt, exp.id)


@main.command()
@shared_options
@click.option("--model", "model_name", help="One of mobilenetv2, edl, tiny_cnn. [synthetic: tiny_cnn; else mobilenetv2]")
@click.option("--adv-eps", type=float, default=0.01, show_default=True,
              help="FGSM epsilon of both adversarial trainings (stored once vs regenerated every batch).")
@click.option("--online", "online_modes", default="online_fgsm", show_default=True,
              help="Comma list of online modes: online_fgsm, online_fgsm_rs (FGSM with random start).")
@click.option("--folds", type=int, help="k-fold by subject: run every fold of a subject-disjoint k-fold split.")
@click.option("--transfer/--no-transfer", default=True, show_default=True,
              help="Also judge every model on test examples made once against the baseline.")
@click.option("--submit", is_flag=True,
              help="Run the steps on Celery workers (FERQUEUE_BROKER_URL) instead of in this process.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="With --submit: watch the job and print the tables when it ends (else print its id).")
def compare(model_name, adv_eps, online_modes, folds, transfer, submit, wait, **opts):
    """Baseline vs offline vs online adversarial training, side by side, with total compute.

    Same dataset, split, epochs and seed for all three. Offline stores FGSM examples of the
    training images once (the paper's method); online regenerates them every batch. Each model
    is attacked white-box (re-run on itself) and, labelled 'transfer', with fixed examples made
    against the baseline.
    """
    from ferqueue import jobs, ledger
    from ferqueue.data import make_split
    from ferqueue.pipeline import ComparePlan
    from ferqueue.train import ONLINE_MODES

    plan_opts = _resolve(opts, model_name)
    if len(plan_opts["models"]) != 1:
        raise ConfigError(f"compare takes one model, got {plan_opts['models']}")
    if not 0 < adv_eps <= 1:
        raise ConfigError(f"epsilon {adv_eps:g} is outside (0, 1]")
    modes = tuple(m.strip() for m in online_modes.split(",") if m.strip())
    for mode in modes:
        if mode not in ONLINE_MODES:
            raise ConfigError(f"unknown online mode {mode!r}; choose from {', '.join(ONLINE_MODES)}")
    if folds is not None and folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    transfer_attacks = []
    if transfer:
        transfer_attacks = [s for s in plan_opts["eval_attacks"] if s.split(":")[0] in ("fgsm", "pgd")]
        transfer_attacks += _pixel_spec(opts)

    rt, executor = _runtime_and_executor(submit)
    data, ds_row = _load_registered(rt, opts, plan_opts["image_size"])
    if folds:
        splits = [make_split(data, "subject", n_folds=folds, fold=f, seed=opts["seed"]) for f in range(folds)]
    else:
        splits = [make_split(data, opts["split_kind"], test_fraction=opts["test_fraction"], seed=opts["seed"])]
    kind = f"subject{folds}fold" if folds else opts["split_kind"]
    name = opts["experiment"] or f"compare-{data.name}-{kind}-{datetime.now():%Y%m%d-%H%M%S}"
    exp = ledger.get_or_create_experiment(rt.db, name, config={
        "command": "compare", "dataset": data.source, "model": plan_opts["models"][0], "adv_eps": adv_eps,
        "online_modes": list(modes), "splits": [s.describe() for s in splits], "train": plan_opts["train"],
        "eval_attacks": plan_opts["eval_attacks"], "transfer_attacks": transfer_attacks})
    steps = []
    for i, split in enumerate(splits):
        split_row = rt.register_split(ds_row.id, split)
        steps += ComparePlan(
            model=plan_opts["models"][0], dataset_id=ds_row.id, split_id=split_row.id, train=plan_opts["train"],
            adv_eps=adv_eps, weights=opts["weights"], eval_attacks=plan_opts["eval_attacks"],
            transfer_attacks=transfer_attacks, online_modes=modes, shard_size=opts["shard_size"],
            eval_limit=opts["eval_limit"], prefix=f"fold{i}-" if folds else "",
        ).steps()
    pipeline = jobs.plan_pipeline(rt, steps, experiment_id=exp.id, kind="compare")
    console.print(f"[bold]experiment[/bold] {name} (id {exp.id}), compare job {pipeline.id}: "
                  f"{len(splits)} split(s) of {data.name}, {len(steps)} steps")
    if executor is not None:
        from ferqueue.cli_queue import _dispatch, watch_job

        _dispatch(executor, pipeline, quiet=False)
        if not wait:
            console.print(f"tables when it is done: `ferqueue results --experiment {exp.id} --compare`")
            return
        status = watch_job(rt, pipeline.id)
        if status != "done":
            raise click.ClickException(f"compare job {pipeline.id} ended {status}; `ferqueue status {pipeline.id}`")
        print_comparison(rt, exp.id)
        return
    seconds = _execute(rt, pipeline.id)
    console.print(f"compare job {pipeline.id} finished in {seconds:.1f} s")
    print_comparison(rt, exp.id)


def print_comparison(rt, experiment_id: int) -> None:
    from ferqueue.db.queries import comparison

    table_data = comparison(rt.db, experiment_id)
    modes = table_data["modes"]
    folds = table_data["n_splits"]
    title = "accuracy on the test set" + (f", mean ± std over {folds} folds" if folds > 1 else "")
    table = Table(title=title)
    for col in ("setting", "attack", "ε", *modes):
        table.add_column(col, justify="right" if col in modes or col == "ε" else "left")
    for row in table_data["accuracy"]:
        cells = []
        for mode in modes:
            values = row["values"].get(mode)
            if not values:
                cells.append("-")
            elif folds > 1:
                cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}")
            else:
                cells.append(f"{values[0]:.4f}")
        table.add_row(row["setting"], row["attack"], _fmt(row["epsilon"], 2), *cells)
    console.print(table)
    compute = Table(title="compute (summed over folds): training, plus the generation job an offline run consumes")
    for col in ("training", "train s", "generation s", "total s", "gradient evals", "generation evals",
                "total evals", "examples seen"):
        compute.add_column(col, justify="left" if col == "training" else "right")
    for row in table_data["compute"]:
        compute.add_row(row["mode"], _fmt(row["train_seconds"], 1), _fmt(row["generation_seconds"], 1),
                        _fmt(row["total_seconds"], 1), f"{row['gradient_evals']:,}",
                        f"{row['generation_evals']:,}", f"{row['total_evals']:,}", f"{row['examples_seen']:,}")
    console.print(compute)


@main.command(name="cross-eval")
@click.option("--model", "artifact_id", type=int, required=True, help="Model artifact id (`ferqueue runs`).")
@click.option("--dataset", required=True, help="Another dataset: a CK+48-style folder, a FER2013 folder or CSV.")
@click.option("--split", "split_kind", type=click.Choice(["auto", "random", "subject", "predefined"]),
              default="auto", show_default=True, help="auto: the dataset's own test subset when it has one, "
              "else the paper's random split.")
@click.option("--subset", type=click.Choice(["test", "train"]), default="test", show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--test-fraction", type=float, default=0.2, show_default=True)
@click.option("--eps", "eps_list", default="0.01,0.03,0.05", show_default=True,
              help="Epsilons of the white-box FGSM (and PGD) attacks; '' for clean only.")
@click.option("--pgd/--no-pgd", default=False, show_default=True)
@click.option("--pixel-queries", type=int, default=0, show_default=True, help="One-pixel random search budget.")
@click.option("--attack", "extra_attacks", multiple=True, metavar="SPEC", help="Another attack (repeatable).")
@click.option("--limit", type=int, help="Evaluate only the first N images of the subset.")
@click.option("--experiment", help="Experiment name. [cross-<model>-<dataset>-<time>]")
@click.option("--submit", is_flag=True, help="Run on Celery workers (FERQUEUE_BROKER_URL) instead of here.")
def cross_eval(artifact_id, dataset, split_kind, subset, seed, test_fraction, eps_list, pgd, pixel_queries,
               extra_attacks, limit, experiment, submit):
    """Evaluate a trained model on another dataset, mapping classes by emotion.

    FER2013's angry and sad are scored as CK+'s anger and sadness, and so on. Images of a
    class the model does not know (FER2013's neutral for a CK+ model) are counted and
    reported, never scored or silently dropped; so is how often the model answers with a
    class the dataset lacks (CK+'s contempt on FER2013).
    """
    from ferqueue import jobs, ledger
    from ferqueue.attacks import parse_attack
    from ferqueue.data import make_split
    from ferqueue.db.models import ModelArtifact
    from ferqueue.evaluate import map_classes
    from ferqueue.pipeline import eval_attack_specs

    attacks = eval_attack_specs(_float_list(eps_list, "epsilon"), pixel_queries, pgd) + list(extra_attacks)
    for spec in attacks:
        parse_attack(spec)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be at least 1, got {limit}")
    rt, executor = _runtime_and_executor(submit)
    artifact = ledger.get(rt.db, ModelArtifact, artifact_id)
    data, ds_row = _load_registered(rt, {"dataset": dataset}, artifact.image_size)
    mapping = map_classes(artifact.class_names, data.class_names)  # refuses disjoint classes up front
    kind = split_kind if split_kind != "auto" else ("predefined" if data.subsets is not None else "random")
    split = make_split(data, kind, test_fraction=test_fraction, seed=seed)
    split_row = rt.register_split(ds_row.id, split)
    name = experiment or f"cross-{artifact.architecture}{artifact.id}-{data.name}-{datetime.now():%Y%m%d-%H%M%S}"
    exp = ledger.get_or_create_experiment(rt.db, name, config={
        "command": "cross-eval", "artifact_id": artifact.id, "dataset": data.source, "split": split.describe(),
        "subset": subset, "attacks": attacks, "mapping": mapping.pairs()})
    job = jobs.plan_evaluate(rt, artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id,
                             attacks=attacks, subset=subset, limit=limit, map_classes=True, experiment_id=exp.id)
    console.print(f"[bold]experiment[/bold] {name} (id {exp.id}), evaluate job {job.id}: model "
                  f"{artifact.architecture}#{artifact.id} on {data.name} ({kind} split, {subset} subset)")
    console.print("class mapping (dataset → model): "
                  + ", ".join(f"{d} → {m}" for d, m in mapping.pairs().items()))
    if mapping.unmapped_dataset_classes:
        console.print(f"[yellow]not scored[/yellow] (no counterpart in the model): "
                      f"{', '.join(mapping.unmapped_dataset_classes)}")
    if mapping.unmapped_model_classes:
        console.print(f"[yellow]model classes absent from the dataset[/yellow] (predicting one is an error): "
                      f"{', '.join(mapping.unmapped_model_classes)}")
    if executor is not None:
        from ferqueue.cli_queue import _dispatch

        _dispatch(executor, job, quiet=False)
        return
    seconds = _execute(rt, job.id)
    console.print(f"evaluate job {job.id} finished in {seconds:.1f} s")
    _print_unmapped(rt, exp.id)
    _print_results(rt, exp.id)


def _print_unmapped(rt, experiment_id: int) -> None:
    from sqlalchemy import select

    from ferqueue.db.models import Evaluation

    with rt.db.session() as s:
        record = s.scalar(select(Evaluation.unmapped).where(Evaluation.experiment_id == experiment_id,
                                                            Evaluation.setting == "clean")
                          .order_by(Evaluation.id.desc()))
    if not record:
        return
    left = record["dataset_classes_without_counterpart"]
    console.print(f"scored {record['examples_scored']:,} images; left out {record['examples_left_out']:,}"
                  + (f" ({', '.join(f'{c}: {n:,}' for c, n in left.items())})" if left else ""))
    wrong = record.get("predicted_model_classes_without_counterpart") or {}
    if wrong:
        console.print("clean predictions of classes the dataset lacks: "
                      + ", ".join(f"{c}: {n:,}" for c, n in wrong.items()))


# ---- results ------------------------------------------------------------------------------

def _print_results(rt, experiment_id=None, setting=None, fmt="table"):
    from ferqueue.db.queries import results

    rows = results(rt.db, experiment_id, setting)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    if fmt == "csv":
        if rows:
            writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return
    if not rows:
        console.print("no evaluations yet")
        return
    table = Table(title="results: accuracy on the test set, clean and under attack")
    for col in ("experiment", "model", "training", "data/split", "setting", "attack", "ε", "n", "accuracy", "F1 (w)",
                "attack success", "confidence"):
        table.add_column(col, justify="right" if col in ("ε", "n", "accuracy", "F1 (w)", "attack success",
                                                          "confidence") else "left")
    for r in rows:
        table.add_row(r["experiment"] or "-", f"{r['model']}#{r['artifact_id']}", r["mode"],
                      f"{r['dataset']}/{r['split']}",
                      r["setting"], r["attack_key"], _fmt(r["epsilon"], 2), str(r["n"]), _fmt(r["accuracy"]),
                      _fmt(r["f1_weighted"]), _fmt(r["success_rate"]), _fmt(r["mean_confidence"], 3))
    console.print(table)


@main.command()
@click.option("--experiment", help="Name or id; all experiments when left out.")
@click.option("--setting", type=click.Choice(["clean", "whitebox", "transfer"]))
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--compare", "as_comparison", is_flag=True,
              help="With --experiment: the side-by-side tables of a `ferqueue compare` experiment.")
def results(experiment, setting, fmt, as_comparison):
    """Compare experiments: one row per model x training mode x attack x epsilon."""
    from ferqueue import ledger

    rt = _runtime()
    exp_id = ledger.find_experiment(rt.db, experiment).id if experiment else None
    if as_comparison:
        if exp_id is None:
            raise ConfigError("--compare needs --experiment NAME|ID")
        if fmt == "json":
            from ferqueue.db.queries import comparison

            click.echo(json.dumps(comparison(rt.db, exp_id), indent=2, default=str))
        else:
            print_comparison(rt, exp_id)
        return
    _print_results(rt, exp_id, setting, fmt)


def _print_runs(rt, experiment_id=None, fmt="table"):
    from ferqueue.db.queries import training_runs

    rows = training_runs(rt.db, experiment_id)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="training runs (the paper's Table 1: parameters, time, accuracy)")
    for col in ("run", "model", "training", "status", "parameters", "weights", "epochs", "train s",
                "generation s", "gradient evals", "val accuracy"):
        table.add_column(col)
    for r in rows:
        probe = (r["params"] or {}).get("train", {}).get("probe_epochs")
        epochs = f"{r['epochs']}" + (f"+{probe}p" if probe and r["model"] != "tiny_cnn" else "") if r["epochs"] is not None else "-"
        table.add_row(str(r["run_id"]), r["model"], r["mode"], r["status"],
                      f"{r['num_params']:,}" if r["num_params"] else "-", r["weights"] or "-", epochs,
                      _fmt(r["wall_seconds"], 1), _fmt(r["generation_seconds"], 1),
                      f"{r['gradient_evals']:,}" if r["gradient_evals"] is not None else "-",
                      _fmt(r["val_accuracy"]))
    console.print(table)


@main.command()
@click.option("--experiment", help="Name or id; all experiments when left out.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def runs(experiment, fmt):
    """Training runs with parameter counts, time, compute and validation accuracy."""
    from ferqueue import ledger

    rt = _runtime()
    exp_id = ledger.find_experiment(rt.db, experiment).id if experiment else None
    _print_runs(rt, exp_id, fmt)


@main.command()
@click.argument("target")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder to write. [reports/<experiment or run>]")
@click.option("--examples/--no-examples", default=True, show_default=True,
              help="Re-run FGSM and one-pixel on a few test images for the example grids.")
def report(target, out, examples):
    """Write PNG plots and a Markdown summary for an EXPERIMENT (name or id) or run:N."""
    from ferqueue.report import write_report

    rt = _runtime()
    if target.startswith("run:"):
        run_id = int(target.removeprefix("run:")) if target.removeprefix("run:").isdigit() else None
        if run_id is None:
            raise ConfigError(f"{target!r} is not run:<id>")
        out = out or Path("reports") / f"run-{run_id}"
        paths = write_report(rt, out, run_id=run_id, examples=examples)
    else:
        out = out or Path("reports") / target
        paths = write_report(rt, out, experiment=target, examples=examples)
    for path in paths:
        console.print(f"wrote {path}")


# ---- jobs ---------------------------------------------------------------------------------

@main.command(name="jobs")
@click.option("--limit", type=int, default=20, show_default=True)
def list_jobs(limit):
    """Recent top-level jobs."""
    from ferqueue.db.queries import jobs as job_rows

    rt = _runtime()
    table = Table(title="jobs")
    for col in ("id", "kind", "status", "executor", "experiment", "created", "seconds", "error"):
        table.add_column(col)
    for job in job_rows(rt.db, limit):
        seconds = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
        table.add_row(str(job.id), job.kind, job.status, job.executor, str(job.experiment_id or "-"),
                      f"{job.created_at:%Y-%m-%d %H:%M:%S}", _fmt(seconds, 1), (job.error or "")[:60])
    console.print(table)


def job_summary_table(rt, job_id: int) -> Table:
    from ferqueue import ledger
    from ferqueue.db.models import Job

    job = ledger.get(rt.db, Job, job_id)
    table = Table(title=f"job {job.id}: {job.kind}, {job.status}" + (f" — {job.error}" if job.error else ""))
    if job.kind == "generate":
        for col in ("shard", "attack", "range", "status", "attempts", "worker", "success", "seconds"):
            table.add_column(col)
        for s in ledger.shards(rt.db, job_id):
            table.add_row(str(s.index), s.attack_key, f"{s.start}:{s.stop}", s.status, str(s.attempts),
                          s.worker or "-", f"{s.n_success}/{s.n_examples}" if s.n_examples is not None else "-",
                          _fmt(s.seconds, 1))
    else:
        for col in ("job", "step", "kind", "status", "result"):
            table.add_column(col)
        for child in ledger.children(rt.db, job_id) or [job]:
            result = json.dumps(child.result, default=str)[:70] if child.result else (child.error or "")[:70]
            table.add_row(str(child.id), child.step or "-", child.kind, child.status, result)
    return table


# ---- store --------------------------------------------------------------------------------

@main.group()
def store():
    """Inspect and verify adversarial stores."""


def _store_for(rt, target: str):
    from ferqueue import ledger
    from ferqueue.db.models import Job
    from ferqueue.store import AdversarialStore

    if target.isdigit():
        job = ledger.get(rt.db, Job, int(target))
        if job.kind != "generate" or not job.store_path:
            raise ConfigError(f"job {target} has no merged store (kind {job.kind}, status {job.status})")
        return job, AdversarialStore(job.store_path)
    return None, AdversarialStore(target)


@store.command()
@click.argument("target")
def verify(target):
    """Check a store (a generation job id or a store path): checksums, shards, dtypes, ranges."""
    from ferqueue import ledger
    from ferqueue.models import fingerprint_file
    from ferqueue.store import verify_shard

    rt = _runtime()
    job, st = _store_for(rt, target)
    problems = []
    if job is not None:
        actual = fingerprint_file(st.path)
        if actual != job.store_sha256:
            problems.append(f"store file {st.path}: sha256 {actual[:12]}… differs from the ledger's "
                            f"{job.store_sha256[:12]}…")
        for shard in ledger.shards(rt.db, job.id):
            try:
                verify_shard(shard.path, shard.sha256, shard.size_bytes)
            except FerqueueError as exc:
                problems.append(str(exc))
    problems += st.verify()
    if problems:
        for p in problems:
            err_console.print(f"[red]✗[/red] {p}")
        raise click.ClickException(f"store {st.path} failed verification ({len(problems)} problems)")
    n = sum(row["n_examples"] for row in st.summary())
    console.print(f"[green]✓[/green] store {st.path}: {len(st.attacks)} attacks, {n} examples, float32, "
                  "checksums match" if job else f"[green]✓[/green] store {st.path}: {n} examples, internally sound")


@store.command()
@click.argument("target")
def show(target):
    """What a store holds: attacks, parameters, counts, success rates, provenance."""
    rt = _runtime()
    _job, st = _store_for(rt, target)
    table = Table(title=f"store {st.path}")
    for col in ("attack key", "params", "examples", "dtype", "success rate", "mean queries"):
        table.add_column(col)
    for row in st.summary():
        table.add_row(row["attack_key"], json.dumps(row["params"]), str(row["n_examples"]), row["dtype"],
                      _fmt(row["success_rate"]), _fmt(row["mean_queries"], 1))
    console.print(table)
    for key in ("model_sha256", "dataset_fingerprint", "split_fingerprint", "subset", "image_size"):
        console.print(f"{key}: {st.attrs.get(key)}")


# ---- db and settings ----------------------------------------------------------------------

@main.group()
def db():
    """Database schema (Alembic migrations)."""


@db.command()
def upgrade():
    """alembic upgrade head on the configured database."""
    from ferqueue.config import load_settings
    from ferqueue.db.session import open_database

    database = open_database(load_settings().database_url, migrate=True)
    console.print(f"{database.safe_url} at revision {database.current_revision()}")


@db.command()
def current():
    """Show the database's migration revision."""
    from ferqueue.config import load_settings
    from ferqueue.db.session import Database

    database = Database(load_settings().database_url)
    console.print(f"{database.safe_url} at revision {database.current_revision() or 'none'}")


@main.command()
def info():
    """Show the effective settings."""
    from ferqueue.config import load_settings
    from ferqueue.db.session import Database

    s = load_settings()
    for key, value in (("home", s.home), ("database", Database(s.database_url).safe_url), ("store root", s.store_root),
                       ("artifacts", s.artifact_root), ("cache", s.cache_dir), ("executor", s.executor),
                       ("broker", s.broker_url or "-"), ("KERAS_HOME", os.environ.get("KERAS_HOME", "~/.keras"))):
        console.print(f"{key:>12}: {value}")


from ferqueue.cli_queue import register as _register_queue_commands  # noqa: E402

_register_queue_commands(main)

if __name__ == "__main__":
    main()
