"""Option sets that several commands share, and their conversion to ferqueue.app's types."""

from __future__ import annotations

from collections.abc import Callable

import click

from ferqueue import app
from ferqueue.data import SPLIT_KINDS
from ferqueue.models import MODEL_NAMES
from ferqueue.vocabulary import SUBSETS, TRAINING_MODES


def _complete_job_ids(ctx, param, incomplete: str) -> list:
    """The shell's choices for a JOB argument: the ledger's newest jobs, each with its kind and
    status. Read-only; nothing at all when the ledger cannot be read (a completion must never
    print an error into the user's command line)."""
    from click.shell_completion import CompletionItem

    from ferqueue.db import queries

    try:
        jobs = queries.jobs(app.open_runtime(write=False).db, limit=100)
    except Exception:  # noqa: BLE001 - no ledger, an old schema, a database down: no suggestions
        return []
    return [CompletionItem(str(job.id), help=f"{job.kind} {job.status}")
            for job in jobs if str(job.id).startswith(incomplete)]


def job_argument(command: Callable) -> Callable:
    """JOB_ID, completed in the shell from the ledger's jobs."""
    return click.argument("job_id", type=int, shell_complete=_complete_job_ids)(command)


MODELS_HELP = f"Comma list of {', '.join(MODEL_NAMES)}. [synthetic: tiny_cnn; else mobilenetv2]"

_EXPERIMENT_OPTIONS = [
    click.option("--dataset", default="synthetic", show_default=True,
                 help="'synthetic', 'synthetic:N', a CK+48-style folder, a FER2013 folder or a FER2013 CSV."),
    click.option("--image-size", type=int, help="Side of the square input. [synthetic: 48; else 75]"),
    click.option("--split", "split_kind", type=click.Choice(SPLIT_KINDS), default="random", show_default=True,
                 help="random: the paper's stratified 80:20; subject: subject-disjoint."),
    click.option("--test-fraction", type=float, default=app.TEST_FRACTION, show_default=True),
    click.option("--seed", type=int, default=app.SEED, show_default=True),
    click.option("--epochs", type=int,
                 help="Training epochs (fine-tuning epochs for ImageNet models). [synthetic: 20; else 10]"),
    click.option("--probe-epochs", type=int,
                 help="Head-only epochs on frozen features before fine-tuning. [synthetic: 0; else 100]"),
    click.option("--lr", type=float, help="Learning rate of the head (or of a model without backbone). [1e-3]"),
    click.option("--fine-tune-lr", type=float, default=app.FINE_TUNE_LR, show_default=True),
    click.option("--batch-size", type=int, help="[synthetic: 16; else 32, as the paper]"),
    click.option("--weights", type=click.Choice(["auto", "imagenet", "random"]), default="auto", show_default=True,
                 help="auto: ImageNet weights when found under KERAS_HOME, otherwise random with a warning."),
    click.option("--eps", "eps_list", default=app.EVAL_EPSILONS, show_default=True,
                 help="Epsilons of the FGSM/PGD evaluation attacks, in (0, 1]."),
    click.option("--pixel-queries", type=int, default=100, show_default=True,
                 help="Budget of the one-pixel attack: queries (random) or generations (de); 0: none."),
    click.option("--pixel-method", type=click.Choice(["random", "de"]), default="random", show_default=True),
    click.option("--pgd/--no-pgd", default=True, show_default=True, help="Also evaluate with PGD."),
    click.option("--pgd-steps", default="10", show_default=True,
                 help="Comma list of PGD step counts, e.g. 10,50 (compare checks that more steps never score higher)."),
    click.option("--attack", "extra_attacks", multiple=True, metavar="SPEC",
                 help="Another evaluation attack, e.g. 'pixel:k=1,method=de,maxiter=100' (repeatable)."),
    click.option("--shard-size", type=int, default=app.SHARD_SIZE, show_default=True),
    click.option("--eval-limit", type=int, help="Attack only the first N test images."),
    click.option("--experiment", help="Experiment name. [<dataset>-<split>-<time>]"),
]
_OPTION_NAMES = ("dataset", "image_size", "split_kind", "test_fraction", "seed", "epochs", "probe_epochs", "lr",
                 "fine_tune_lr", "batch_size", "weights", "eps_list", "pixel_queries", "pixel_method", "pgd",
                 "pgd_steps", "extra_attacks", "shard_size", "eval_limit", "experiment")


def experiment_options(command: Callable) -> Callable:
    """The options of `run`, `submit pipeline` and `compare`, passed on as ``options``."""
    for option in reversed(_EXPERIMENT_OPTIONS):
        command = option(command)
    return command


def take_experiment_options(kwargs: dict) -> app.ExperimentOptions:
    """Remove the experiment options from a command's keyword arguments, as one object."""
    values = {name: kwargs.pop(name) for name in _OPTION_NAMES}
    values["extra_attacks"] = tuple(values["extra_attacks"])
    return app.ExperimentOptions(**values)


def data_options(command: Callable) -> Callable:
    """A registered dataset and split by id, or new ones by spec and kind."""
    for option in reversed((
        click.option("--dataset", required=True,
                     help="A dataset id, or 'synthetic[:N]', a CK+48 folder, a FER2013 folder or CSV."),
        click.option("--image-size", type=int, help="Side of the square input. [synthetic: 48; else 75]"),
        click.option("--split", "split", default="random", show_default=True,
                     help=f"A split id, or a split kind: {', '.join(SPLIT_KINDS)}."),
        click.option("--seed", type=int, default=app.SEED, show_default=True, help="Seed of a new split."),
        click.option("--test-fraction", type=float, default=app.TEST_FRACTION, show_default=True),
    )):
        command = option(command)
    return command


def submit_flags(command: Callable) -> Callable:
    command = click.option("--local", is_flag=True, help="Run the job in this process instead of on Celery workers.")(
        command)
    return click.option("--quiet", "-q", is_flag=True, help="Print only the job id.")(command)


def subset_option(default: str) -> Callable:
    return click.option("--subset", type=click.Choice(SUBSETS), default=default, show_default=True)


def mode_option() -> Callable:
    return click.option("--mode", type=click.Choice(TRAINING_MODES), default=TRAINING_MODES[0], show_default=True)


def robust_training_options(command: Callable) -> Callable:
    """The online adversarial trainings' settings (TrainConfig's fields of the same names); unset
    ones keep TrainConfig's defaults. Gathered into one ``robust`` dict for the command."""
    options = [
        click.option("--adv-steps", type=int, help="pgd_at and trades: PGD steps per batch, each of "
                                                   "2.5 * eps / steps. [10]"),
        click.option("--trades-beta", type=float, help="trades: the weight of the KL term. [6.0]"),
        click.option("--robust-check", type=int, help="After every epoch, score this many held-out images under "
                                                      "PGD-10 at the adversarial eps (history: val_pgd_accuracy, "
                                                      "catastrophic_overfitting). [0: off]"),
        click.option("--keep-best-robust", is_flag=True, default=None,
                     help="End with the weights of the epoch whose robust check scored best."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def take_robust_options(kwargs: dict) -> dict:
    """The robust training options given on the command line, removed from ``kwargs``."""
    names = ("adv_steps", "trades_beta", "robust_check", "keep_best_robust")
    return {name: value for name in names if (value := kwargs.pop(name, None)) is not None}

