"""What the command line asks for, as plain functions: the defaults, resolving a dataset and a
split, planning the paper's pipeline, compare, cross-eval and single jobs, and sending a
planned job to an executor. The CLI (``ferqueue.cli``) parses arguments and renders what
these return; nothing here prints.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime

from ferqueue.attacks import parse_attack
from ferqueue.attacks.base import check_eps
from ferqueue.config import Settings, load_settings
from ferqueue.db import ledger
from ferqueue.db.domain import DatasetRecord, Experiment, Job, SplitRecord
from ferqueue.errors import ConfigError, LedgerError, ServiceError
from ferqueue.jobs import (
    CompareSpec,
    EvaluateSpec,
    Executor,
    LocalExecutor,
    PipelineSpec,
    Progress,
    SweepSpec,
    TrainSpec,
    check,
    no_progress,
    plan,
)
from ferqueue.plans import ComparePlan, PaperPlan, SweepPlan, eval_attack_specs, pixel_specs
from ferqueue.runtime import Runtime
from ferqueue.vocabulary import DONE, OFFLINE_ADV, ONLINE_FGSM, ONLINE_MODES, STANDARD, STORE_MODES

# ---- defaults ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    models: str
    image_size: int
    epochs: int
    probe_epochs: int
    lr: float
    batch_size: int


# Measured: tiny_cnn on 700 synthetic faces at 48px reaches 0.86-0.97 test accuracy in 20 epochs of
# batch 16 (19 s); 12 epochs of batch 32 leave it at 0.56. Real faces: the paper's MobileNetV2 at
# 75px, batch 32, fine-tuned 10 epochs after a 100-epoch linear probe.
DEFAULTS = {
    "synthetic": Defaults(models="tiny_cnn", image_size=48, epochs=20, probe_epochs=0, lr=3e-3, batch_size=16),
    "real": Defaults(models="mobilenetv2", image_size=75, epochs=10, probe_epochs=100, lr=1e-3, batch_size=32),
}
FINE_TUNE_LR = 3e-5
EVAL_EPSILONS = "0.01,0.02,0.03,0.04,0.05"  # the paper's
CROSS_EPSILONS = "0.01,0.03,0.05"
STORE_EPS = 0.01  # the paper's stored FGSM examples
SHARD_SIZE = 256
SEED = 42
TEST_FRACTION = 0.2


def defaults_for(dataset: str) -> Defaults:
    return DEFAULTS["synthetic" if dataset.split(":")[0] == "synthetic" else "real"]


def parse_epsilons(text: str) -> list[float]:
    """'0.01, 0.03' -> [0.01, 0.03], each in (0, 1]; '' -> []."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            number = float(part)
        except ValueError:
            raise ConfigError(f"epsilon {part!r} is not a number") from None
        out.append(check_eps(number))
    return out


def check_positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"{name} must be at least 1, got {value}")


@dataclass(frozen=True)
class ExperimentOptions:
    """The options `run`, `submit pipeline` and `compare` share; None: the dataset's default."""

    dataset: str = "synthetic"
    image_size: int | None = None
    split_kind: str = "random"
    test_fraction: float = TEST_FRACTION
    seed: int = SEED
    epochs: int | None = None
    probe_epochs: int | None = None
    lr: float | None = None
    fine_tune_lr: float = FINE_TUNE_LR
    batch_size: int | None = None
    weights: str = "auto"
    eps_list: str = EVAL_EPSILONS
    pixel_queries: int = 100
    pixel_method: str = "random"
    pgd: bool = True
    pgd_steps: str = "10"
    extra_attacks: tuple[str, ...] = ()
    shard_size: int = SHARD_SIZE
    eval_limit: int | None = None
    experiment: str | None = None


@dataclass(frozen=True)
class Resolved:
    """Options with the dataset's defaults filled in, every value checked."""

    models: list[str]
    epsilons: list[float]
    image_size: int
    train: dict  # TrainConfig fields but the mode
    eval_attacks: list[str]
    pixel_attacks: list[str]


def resolve(options: ExperimentOptions, models: str | None) -> Resolved:
    """Fill dataset-dependent defaults and check every value before any data is loaded."""
    from ferqueue.models import MODEL_NAMES
    from ferqueue.train import TrainConfig

    defaults = defaults_for(options.dataset)
    names = [m.strip() for m in (models or defaults.models).split(",") if m.strip()]
    for name in names:
        if name not in MODEL_NAMES:
            raise ConfigError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")
    if not names:
        raise ConfigError("no models to run")
    epsilons = parse_epsilons(options.eps_list)
    if options.pixel_queries < 0:
        raise ConfigError(f"--pixel-queries must not be negative, got {options.pixel_queries}")
    check_positive("--shard-size", options.shard_size)
    check_positive("--eval-limit", options.eval_limit)
    image_size = options.image_size or defaults.image_size
    check_positive("--image-size", image_size)
    train = TrainConfig(
        epochs=defaults.epochs if options.epochs is None else options.epochs,
        probe_epochs=defaults.probe_epochs if options.probe_epochs is None else options.probe_epochs,
        lr=options.lr or defaults.lr, fine_tune_lr=options.fine_tune_lr,
        batch_size=options.batch_size or defaults.batch_size, seed=options.seed)
    eval_attacks = eval_attack_specs(epsilons, options.pixel_queries, options.pgd, options.pixel_method,
                                     parse_steps(options.pgd_steps))
    eval_attacks += list(options.extra_attacks)
    for spec in eval_attacks:  # refuse a bad spec before any data is loaded
        parse_attack(spec).check_image_size(image_size)
    train = {k: v for k, v in train.to_dict().items() if k != "mode"}
    check_trainings(names, train)
    return Resolved(models=names, epsilons=epsilons, image_size=image_size, train=train, eval_attacks=eval_attacks,
                    pixel_attacks=pixel_specs(options.pixel_queries, options.pixel_method))


def check_trainings(models: list[str], train: dict, mode: str = STANDARD) -> None:
    """Every training of these models with these settings, checked as its job would be (no data needed)."""
    for model in models:
        TrainSpec(dataset_id=0, split_id=0, architecture=model, mode=mode, train=train)


# ---- the runtime, executors and the broker ---------------------------------------------------------


def open_runtime(*, write: bool, local: bool = False, settings: Settings | None = None) -> Runtime:
    """This process's runtime. ``write``: the command records something, so the schema is
    created or upgraded first; read-only commands only check it. ``local``: jobs planned here
    run here, whatever broker is configured (the ledger records the executor that really runs them)."""
    settings = settings or load_settings()
    if local:
        settings = replace(settings, broker_url=None, result_backend=None)
    return Runtime(settings, migrate=write)


@contextmanager
def reaching_broker(settings: Settings, what: str) -> Iterator[None]:
    """An unreachable broker or result backend as one ServiceError, its password masked."""
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
        raise ServiceError(f"{what}: the broker at {maybe_sanitize_url(settings.broker_url)} or the result "
                           f"backend is unreachable ({cause})") from None


def executor_for(rt: Runtime, local: bool, progress: Progress = no_progress) -> Executor:
    """The local executor, or (refused first when no broker is configured or reachable) Celery's."""
    if local:
        return LocalExecutor(rt, progress)
    rt.settings.require_broker(hint="--local")
    from ferqueue.queue import CeleryExecutor

    executor = CeleryExecutor(rt)
    with reaching_broker(rt.settings, "nothing was submitted"):
        executor.check_connection()
    return executor


def dispatch(executor: Executor, job_id: int) -> list[str]:
    """Send a planned job to its executor: run it to the end here, or enqueue it. A local job
    that failed raises its error."""
    if isinstance(executor, LocalExecutor):
        executor.run(job_id)
        job = ledger.job(executor.rt.db, job_id)
        if job.status != DONE:
            raise LedgerError(f"job {job_id} ended {job.status}: {job.error}")
        return []
    with reaching_broker(executor.rt.settings, f"job {job_id} is recorded but not (fully) enqueued; "
                                               f"`ferqueue resume {job_id}` once the broker is back"):
        return executor.submit(job_id)


def reopen(rt: Runtime, job_id: int) -> tuple[list[int], list[str]]:
    """Before a resume: reopen a job's failed and cancelled parts and reset what finished but
    was since lost or damaged (a shard file): (reopened job ids, what was reset, in words)."""
    from ferqueue.jobs import kind

    ledger.job(rt.db, job_id)  # a clear error for an unknown id before anything changes
    reopened = ledger.reopen_tree(rt.db, job_id)
    repaired = []
    for job in ledger.tree(rt.db, job_id):
        if job.active:
            repaired += kind(job.kind).repair(rt, job)
    return reopened, repaired


def resend(executor: Executor, job_id: int) -> tuple[list[str], int]:
    """Send again what the ledger says is unfinished and no live worker holds: (task ids sent,
    tasks still held); the local executor runs it to its end here."""
    if isinstance(executor, LocalExecutor):
        dispatch(executor, job_id)
        return [], 0
    with reaching_broker(executor.rt.settings, f"job {job_id} could not be resumed"):
        held = executor.in_flight()
        return executor.submit(job_id, held), len(held)


def run_locally(rt: Runtime, job_id: int, progress: Progress = no_progress) -> float:
    """Run a planned job to its end in this process; returns its wall seconds."""
    started = time.perf_counter()
    dispatch(LocalExecutor(rt, progress), job_id)
    return time.perf_counter() - started


# ---- datasets, splits, experiments -------------------------------------------------------------------


def load_registered(rt: Runtime, dataset: str, image_size: int, progress=None):
    """Load a dataset spec (cached by fingerprint) and record it: (dataset, its record)."""
    from ferqueue.data import load_dataset

    data = load_dataset(dataset, image_size, cache_dir=rt.settings.cache_dir, progress=progress)
    return data, rt.register_dataset(data)


def dataset_and_split(rt: Runtime, dataset: str, image_size: int | None, split: str, seed: int = SEED,
                      test_fraction: float = TEST_FRACTION, progress=None) -> tuple[DatasetRecord, SplitRecord]:
    """Records of a dataset (an id, or a spec to load) and a split (an id, or a kind to make),
    registered when new."""
    from ferqueue.data import make_split

    data = None
    if dataset.isdigit():
        ds_row = ledger.dataset(rt.db, int(dataset))
        if image_size is not None and image_size != ds_row.image_size:
            raise ConfigError(f"dataset {dataset} is registered at {ds_row.image_size}px, not --image-size {image_size}")
    else:
        data, ds_row = load_registered(rt, dataset, image_size or defaults_for(dataset).image_size, progress)
    if split.isdigit():
        split_row = ledger.split(rt.db, int(split))
        if split_row.dataset_id != ds_row.id:
            raise ConfigError(f"split {split} belongs to dataset {split_row.dataset_id}, not {ds_row.id}")
        return ds_row, split_row
    made = make_split(data or rt.dataset(ds_row), split, test_fraction=test_fraction, seed=seed)
    return ds_row, rt.register_split(ds_row.id, made)


def experiment(rt: Runtime, name: str | None, default: str, config: dict | None = None) -> Experiment:
    """The experiment named ``name`` (made when new, shared when it exists: the user chose it),
    or a new one with the ``default`` name plus a timestamp, never shared with a concurrent
    command: the database's unique name decides, and a loser takes the next suffix."""
    if name:
        return ledger.get_or_create_experiment(rt.db, name, config=config)
    stem = f"{default}-{datetime.now():%Y%m%d-%H%M%S}"
    for attempt in range(1, 1000):
        made = ledger.create_experiment(rt.db, stem if attempt == 1 else f"{stem}-{attempt}", config=config)
        if made is not None:
            return made
    raise LedgerError(f"could not find a free experiment name after {stem}")


# ---- plans -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """A job recorded in the ledger and what the user may want to hear about it."""

    job: Job
    experiment: Experiment | None = None
    dataset: DatasetRecord | None = None
    splits: list[SplitRecord] = field(default_factory=list)
    facts: dict = field(default_factory=dict)


def plan_paper(rt: Runtime, options: ExperimentOptions, models: str | None = None, adv_epochs: int | None = None,
               store_eps: float = STORE_EPS, command: str = "run", progress=None) -> Planned:
    """The paper's four scenarios for each model as one pipeline job (`ferqueue run` is this,
    run here; `ferqueue submit pipeline` sends it to the workers)."""

    resolved = resolve(options, models)
    store_attacks = [f"fgsm:eps={check_eps(store_eps):g}", *resolved.pixel_attacks]
    adv_train = {**resolved.train, "epochs": resolved.train["epochs"] if adv_epochs is None else adv_epochs}
    check_trainings(resolved.models, adv_train, OFFLINE_ADV)
    ds_row, split_row = dataset_and_split(rt, options.dataset, resolved.image_size, options.split_kind,
                                          options.seed, options.test_fraction, progress)
    steps = PaperPlan(models=resolved.models, dataset_id=ds_row.id, split_id=split_row.id, train=resolved.train,
                      adv_train=adv_train, weights=options.weights, eval_attacks=resolved.eval_attacks,
                      store_attacks=store_attacks, shard_size=options.shard_size,
                      eval_limit=options.eval_limit).steps()
    spec = PipelineSpec(steps=steps)
    check(rt, spec)  # every step, before the experiment is recorded
    exp = experiment(rt, options.experiment, f"{ds_row.name}-{options.split_kind}", config={
        "command": command, "dataset": ds_row.source, "models": resolved.models, "split": split_row.kind,
        "train": resolved.train, "adv_train": adv_train, "eval_attacks": resolved.eval_attacks,
        "store_attacks": store_attacks})
    job = plan(rt, spec, experiment_id=exp.id)
    return Planned(job=job, experiment=exp, dataset=ds_row, splits=[split_row], facts={
        "models": resolved.models, "store_attacks": store_attacks, "eval_attacks": resolved.eval_attacks,
        "epochs": resolved.train["epochs"], "probe_epochs": resolved.train["probe_epochs"],
        "adv_epochs": adv_train["epochs"]})


def plan_compare(rt: Runtime, options: ExperimentOptions, model: str | None = None, adv_eps: float = 0.01,
                 online_modes: str = ONLINE_FGSM, folds: int | None = None, transfer: bool = True,
                 progress=None, robust: dict | None = None, refresh_every: int | None = None,
                 refresh_attack: str = "pgd") -> Planned:
    """Baseline vs offline vs online adversarial training on one split (or every fold of a
    subject-disjoint k-fold split), same epochs and seed: one compare job. ``robust``: the
    online modes' TrainConfig settings (adv_steps, trades_beta, robust_check, keep_best_robust),
    the same for every model. ``refresh_every``: also train refresh_adv, whose store is made
    again against its own weights every R epochs by ``refresh_attack`` (fgsm or pgd)."""
    from dataclasses import replace

    from ferqueue.data import make_split

    resolved = resolve(options, model)
    if robust:
        resolved = replace(resolved, train={**resolved.train, **robust})
    refresh_spec = None
    if refresh_every is not None:
        if not 1 <= refresh_every < resolved.train["epochs"]:
            raise ConfigError(f"--refresh-every {refresh_every} must be at least 1 and below the "
                              f"{resolved.train['epochs']} epochs, or nothing is refreshed")
        if refresh_attack not in ("fgsm", "pgd"):
            raise ConfigError(f"--refresh-attack {refresh_attack!r}: choose fgsm or pgd")
        refresh_spec = (f"fgsm:eps={adv_eps:g}" if refresh_attack == "fgsm"
                        else f"pgd:eps={adv_eps:g},steps={resolved.train['adv_steps']}")
    if len(resolved.models) != 1:
        raise ConfigError(f"compare takes one model, got {resolved.models}")
    check_eps(adv_eps)
    modes = tuple(m.strip() for m in online_modes.split(",") if m.strip())
    for mode in modes:
        if mode not in ONLINE_MODES:
            raise ConfigError(f"unknown online mode {mode!r}; choose from {', '.join(ONLINE_MODES)}")
    if folds is not None and folds < 2:
        raise ConfigError(f"--folds must be at least 2, got {folds}")
    transfer_attacks = []
    if transfer:
        transfer_attacks = [s for s in resolved.eval_attacks if s.split(":")[0] in ("fgsm", "pgd")]
        transfer_attacks += resolved.pixel_attacks
    data, ds_row = load_registered(rt, options.dataset, resolved.image_size, progress)
    if folds:
        splits = [make_split(data, "subject", n_folds=folds, fold=f, seed=options.seed) for f in range(folds)]
    else:
        splits = [make_split(data, options.split_kind, test_fraction=options.test_fraction, seed=options.seed)]
    split_rows = [rt.register_split(ds_row.id, s) for s in splits]
    steps = []
    for i, split_row in enumerate(split_rows):
        steps += ComparePlan(
            model=resolved.models[0], dataset_id=ds_row.id, split_id=split_row.id, train=resolved.train,
            adv_eps=adv_eps, weights=options.weights, eval_attacks=resolved.eval_attacks,
            transfer_attacks=transfer_attacks, online_modes=modes, shard_size=options.shard_size,
            eval_limit=options.eval_limit, prefix=f"fold{i}-" if folds else "", refresh_every=refresh_every,
            refresh_attack=refresh_spec,
        ).steps()
    spec = CompareSpec(steps=steps)
    check(rt, spec)
    kind_name = f"subject{folds}fold" if folds else options.split_kind
    exp = experiment(rt, options.experiment, f"compare-{data.name}-{kind_name}", config={
        "command": "compare", "dataset": data.source, "model": resolved.models[0], "adv_eps": adv_eps,
        "online_modes": list(modes), "refresh_every": refresh_every, "refresh_attack": refresh_spec,
        "splits": [s.describe() for s in splits], "train": resolved.train,
        "eval_attacks": resolved.eval_attacks, "transfer_attacks": transfer_attacks})
    job = plan(rt, spec, experiment_id=exp.id)
    return Planned(job=job, experiment=exp, dataset=ds_row, splits=split_rows,
                   facts={"n_steps": len(steps), "model": resolved.models[0], "modes": modes})


# a sweep's grid has at most this many configurations (each is a training and an evaluation)
MAX_SWEEP_CONFIGS = 100


def _grid_value(text: str):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_steps(text: str) -> tuple[int, ...]:
    """``"10,50"``: PGD step counts, each at least 1, none repeated."""
    try:
        steps = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--pgd-steps {text!r} is not a comma list of whole numbers") from None
    if not steps or min(steps) < 1 or len(set(steps)) != len(steps):
        raise ConfigError(f"--pgd-steps {text!r} needs distinct step counts of at least 1")
    return steps


def parse_grid(text: str) -> dict[str, list]:
    """``"mode=standard,pgd_at;lr=0.001,0.003"``: each training setting (a TrainConfig field, or
    ``mode``) with the values to try."""
    from dataclasses import fields

    from ferqueue.train import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    grid: dict[str, list] = {}
    for part in (p for p in text.split(";") if p.strip()):
        key, sep, values = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ConfigError(f"--grid part {part.strip()!r} is not KEY=V1,V2,...")
        if key not in known:
            raise ConfigError(f"--grid key {key!r} is not a training setting; choose from {', '.join(sorted(known))}")
        if key in grid:
            raise ConfigError(f"--grid names {key!r} twice")
        parsed = [_grid_value(v) for v in values.split(",") if v.strip()]
        if not parsed or len(set(map(repr, parsed))) != len(parsed):
            raise ConfigError(f"--grid key {key!r} needs distinct values, got {values.strip()!r}")
        grid[key] = parsed
    if not grid:
        raise ConfigError("--grid is empty; give e.g. 'mode=standard,pgd_at;lr=0.001,0.003'")
    for mode in grid.get("mode", []):
        if mode in STORE_MODES:
            raise ConfigError(f"a sweep trains each configuration on its own; {mode} needs a stored "
                              "generation job (`ferqueue compare`)")
    return grid


def plan_sweep(rt: Runtime, options: ExperimentOptions, model: str | None, grid_text: str,
               progress=None) -> Planned:
    """One training and one evaluation per configuration of the grid, same split and seed: one
    sweep job, whose configurations `ferqueue results --compare` ranks."""
    import itertools

    resolved = resolve(options, model)
    if len(resolved.models) != 1:
        raise ConfigError(f"a sweep takes one model, got {resolved.models}")
    grid = parse_grid(grid_text)
    configs = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    if len(configs) > MAX_SWEEP_CONFIGS:
        raise ConfigError(f"--grid gives {len(configs)} configurations; at most {MAX_SWEEP_CONFIGS}")
    ds_row, split_row = dataset_and_split(rt, options.dataset, resolved.image_size, options.split_kind,
                                          options.seed, options.test_fraction, progress)
    steps = SweepPlan(model=resolved.models[0], dataset_id=ds_row.id, split_id=split_row.id, train=resolved.train,
                      configs=configs, weights=options.weights, eval_attacks=resolved.eval_attacks,
                      eval_limit=options.eval_limit).steps()
    spec = SweepSpec(steps=steps)
    check(rt, spec)  # every configuration's training settings, before the experiment is recorded
    exp = experiment(rt, options.experiment, f"sweep-{ds_row.name}-{split_row.kind}", config={
        "command": "sweep", "dataset": ds_row.source, "model": resolved.models[0], "grid": grid,
        "train": resolved.train, "eval_attacks": resolved.eval_attacks, "split": split_row.kind})
    job = plan(rt, spec, experiment_id=exp.id)
    return Planned(job=job, experiment=exp, dataset=ds_row, splits=[split_row],
                   facts={"n_configs": len(configs), "model": resolved.models[0], "grid": grid})


def plan_cross_eval(rt: Runtime, artifact_id: int, dataset: str, split_kind: str = "auto", subset: str = "test",
                    seed: int = SEED, test_fraction: float = TEST_FRACTION, eps_list: str = CROSS_EPSILONS,
                    pgd: bool = False, pixel_queries: int = 0, extra_attacks: tuple[str, ...] = (),
                    limit: int | None = None, name: str | None = None, progress=None) -> Planned:
    """A trained model on another dataset's subset, classes mapped by emotion: one evaluate job."""
    from ferqueue.data import make_split
    from ferqueue.evaluate import map_classes

    attacks = eval_attack_specs(parse_epsilons(eps_list), pixel_queries, pgd) + list(extra_attacks)
    for spec in attacks:
        parse_attack(spec)
    check_positive("--limit", limit)
    artifact = ledger.artifact(rt.db, artifact_id)
    data, ds_row = load_registered(rt, dataset, artifact.image_size, progress)
    mapping = map_classes(artifact.class_names, data.class_names)  # refuses disjoint classes up front
    kind = split_kind if split_kind != "auto" else ("predefined" if data.subsets is not None else "random")
    made = make_split(data, kind, test_fraction=test_fraction, seed=seed)
    split_row = rt.register_split(ds_row.id, made)
    spec = EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id, attacks=attacks,
                        subset=subset, limit=limit, map_classes=True)
    check(rt, spec)
    exp = experiment(rt, name, f"cross-{artifact.architecture}{artifact.id}-{data.name}", config={
        "command": "cross-eval", "artifact_id": artifact.id, "dataset": data.source, "split": made.describe(),
        "subset": subset, "attacks": attacks, "mapping": mapping.pairs()})
    job = plan(rt, spec, experiment_id=exp.id)
    return Planned(job=job, experiment=exp, dataset=ds_row, splits=[split_row], facts={
        "artifact": artifact, "split_kind": kind, "subset": subset, "mapping": mapping.pairs(),
        "unmapped_dataset_classes": mapping.unmapped_dataset_classes,
        "unmapped_model_classes": mapping.unmapped_model_classes})


def plan_single(rt: Runtime, spec, experiment_name: str | None = None) -> Planned:
    """One generation, training or evaluation job (`ferqueue submit generate|train|evaluate`)."""
    exp = ledger.get_or_create_experiment(rt.db, experiment_name) if experiment_name else None
    return Planned(job=plan(rt, spec, experiment_id=exp.id if exp else None), experiment=exp)


# ---- stores and settings ---------------------------------------------------------------------------


def open_store(rt: Runtime, target: str):
    """(generation job or None, its store) for a job id or a store file path."""
    from ferqueue.store import AdversarialStore
    from ferqueue.store.layout import under_root

    if target.isdigit():
        job = ledger.job(rt.db, int(target))
        if job.kind != "generate" or not job.store_path:
            raise ConfigError(f"job {target} has no merged store (kind {job.kind}, status {job.status})")
        return job, AdversarialStore(rt.store_file(job.store_path, job.store_sha256, job.store_size),
                                     originals=rt.originals(job.spec["dataset_id"]), resolve=rt.resolve_shard)
    opened = AdversarialStore(under_root(rt.settings.store_root, target))
    ds_row = ledger.find_dataset(rt.db, opened.attrs.get("dataset_fingerprint"), opened.attrs.get("image_size"))
    if ds_row is not None:  # the dataset its images are decoded against, when this ledger knows it
        opened.originals = rt.originals(ds_row.id)
    return None, opened


def export_store(rt: Runtime, target: str, out: str):
    """Write a job's (or a store file's) examples as one self-contained file: (path, sha256, size)."""
    from pathlib import Path

    from ferqueue.store import export_store as write_export

    _job, opened = open_store(rt, target)
    path = Path(out).expanduser().resolve()
    if path.exists():
        raise ConfigError(f"{path} exists: export writes a new file")
    sha, size = write_export(opened, path)
    return path, sha, size


def verify_store(rt: Runtime, target: str):
    """(job or None, store, problems): a job's store and shards checked against the ledger's
    checksums, and any store checked inside (dtypes, shapes, value ranges, duplicates)."""
    from ferqueue.errors import FerqueueError
    from ferqueue.files import fingerprint_file
    from ferqueue.store import verify_shard

    job, opened = open_store(rt, target)
    problems = []
    if job is not None:
        actual = fingerprint_file(opened.path)
        if actual != job.store_sha256:
            problems.append(f"store file {opened.path}: sha256 {actual[:12]}… differs from the ledger's "
                            f"{job.store_sha256[:12]}…")
        for shard in ledger.shards(rt.db, job.id):
            try:
                verify_shard(rt.store_file(shard.path, shard.sha256, shard.size_bytes), shard.sha256, shard.size_bytes)
            except FerqueueError as exc:
                problems.append(str(exc))
    return job, opened, problems + opened.verify()


def outcomes(rt: Runtime, job_id: int, part: str | None = None, fell: bool = False,
             limit: int | None = None) -> list[dict]:
    """Every example's outcome in an evaluation job (its finished shards), optionally of one part
    (an attack key, or 'clean', or 'transfer:KEY') and only those the attack made wrong where the
    clean image was right."""
    from ferqueue.store import read_outcomes

    job = ledger.job(rt.db, job_id)
    if job.kind != "evaluate":
        raise ConfigError(f"job {job_id} is a {job.kind} job; per-example outcomes belong to evaluation jobs")
    classes = list(ledger.artifact(rt.db, job.spec["artifact_id"]).class_names)
    keys = {s.attack_key for s in ledger.shards(rt.db, job_id)}
    if part is not None:
        wanted = part if ":" in part else ("clean:none" if part in ("clean", "none") else f"whitebox:{part}")
        if wanted not in keys:
            raise ConfigError(f"job {job_id} has no part {part!r}; it has {', '.join(sorted(keys))}")
    rows = []
    for shard in ledger.shards(rt.db, job_id):
        if not shard.done or (part is not None and shard.attack_key != wanted):
            continue
        arrays, _attrs = read_outcomes(rt.store_file(shard.path, shard.sha256, shard.size_bytes), shard.sha256,
                                       shard.size_bytes)
        for i in range(len(arrays["labels"])):
            label, adv = int(arrays["labels"][i]), int(arrays["adv_pred"][i])
            clean = int(arrays["clean_pred"][i])
            if fell and not (adv != label and clean in (label, -1)):
                continue
            rows.append({"part": shard.attack_key, "source_index": int(arrays["source_index"][i]),
                         "label": classes[label], "clean_prediction": classes[clean] if clean >= 0 else "-",
                         "prediction": classes[adv], "confidence": float(arrays["adv_conf"][i]),
                         "success": bool(arrays["success"][i]), "queries": int(arrays["queries"][i]),
                         "linf": float(arrays["linf"][i]), "l0": int(arrays["l0"][i])})
            if limit is not None and len(rows) >= limit:
                return rows
    return rows


def settings_summary(settings: Settings) -> dict[str, str]:
    """The effective settings as `ferqueue info` shows them, passwords masked."""
    import os

    from kombu.utils.url import maybe_sanitize_url

    from ferqueue.db.session import safe_url

    return {"home": str(settings.home), "database": safe_url(settings.database_url),
            "store root": str(settings.store_root), "artifacts": str(settings.artifact_root),
            "cache": str(settings.cache_dir), "executor": settings.executor,
            "broker": maybe_sanitize_url(settings.broker_url) if settings.broker_url else "-",
            "KERAS_HOME": os.environ.get("KERAS_HOME", "~/.keras")}


def device_summary() -> dict:
    """The devices TensorFlow sees and the batch size each attack uses on them."""
    import tensorflow as tf

    from ferqueue.attacks import attack_classes
    from ferqueue.models import engine

    gpus = engine.accelerators()
    return {"devices": engine.devices(), "accelerators": [d.name for d in gpus],
            "built_with_cuda": tf.test.is_built_with_cuda(),
            "attack_batch_sizes": {cls.name: engine.batch_size(cls.default_batch_size, bool(gpus))
                                   for cls in attack_classes()}}
