"""Read-only queries behind the results tables, `ferqueue jobs`, `ferqueue status` and `ferqueue metrics`."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from ferqueue.db.domain import Evaluation, Job
from ferqueue.db.ledger import children, find_experiment, job, record, shards
from ferqueue.db.session import Database
from ferqueue.db.tables import (
    ArtifactRow,
    DatasetRow,
    EvaluationRow,
    ExperimentRow,
    JobRow,
    RunRow,
    ShardRow,
    SplitRow,
)
from ferqueue.errors import ConfigError
from ferqueue.vocabulary import (
    ACTIVE_JOB_STATES,
    CLEAN,
    DONE,
    EVAL_SETTINGS,
    EXTERNAL,
    TRAINING_MODES,
    TRANSFER,
    mode_rank,
)


def results(db: Database, experiment_id: int | None = None, setting: str | None = None) -> list[dict]:
    """One row per model x training mode x setting x attack x epsilon: the latest evaluation."""
    latest = (
        select(func.max(EvaluationRow.id).label("id"))
        .group_by(EvaluationRow.artifact_id, EvaluationRow.dataset_id, EvaluationRow.split_id, EvaluationRow.subset,
                  EvaluationRow.setting, EvaluationRow.attack_key, EvaluationRow.source_artifact_id)
    )
    if experiment_id is not None:
        latest = latest.where(EvaluationRow.experiment_id == experiment_id)
    if setting is not None:
        latest = latest.where(EvaluationRow.setting == setting)
    query = (
        select(EvaluationRow, ArtifactRow, RunRow, DatasetRow, SplitRow, ExperimentRow)
        .join(ArtifactRow, ArtifactRow.id == EvaluationRow.artifact_id)
        .outerjoin(RunRow, RunRow.id == EvaluationRow.training_run_id)
        .join(DatasetRow, DatasetRow.id == EvaluationRow.dataset_id)
        .outerjoin(SplitRow, SplitRow.id == EvaluationRow.split_id)
        .outerjoin(ExperimentRow, ExperimentRow.id == EvaluationRow.experiment_id)
        .where(EvaluationRow.id.in_(latest))
    )
    rows = []
    with db.session() as s:
        for ev, art, run, ds, split, exp in s.execute(query):
            rows.append({
                "experiment": exp.name if exp else None,
                "evaluation_id": ev.id,
                "artifact_id": art.id,
                "model": art.architecture,
                "mode": run.mode if run else EXTERNAL,
                "dataset": ds.name,
                "split": f"{split.kind}" + (f"/{split.fold}" if split and split.n_folds else "") if split else "-",
                "setting": ev.setting,
                "attack": ev.attack,
                "attack_key": ev.attack_key,
                "epsilon": ev.epsilon,
                "n": ev.n,
                "accuracy": ev.accuracy,
                "f1_weighted": ev.f1_weighted,
                "precision_weighted": ev.precision_weighted,
                "recall_weighted": ev.recall_weighted,
                "f1_macro": ev.f1_macro,
                "success_rate": ev.success_rate,
                "mean_confidence": ev.mean_confidence,
                "mean_queries": ev.mean_queries,
                "source_artifact_id": ev.source_artifact_id,
                "seconds": ev.seconds,
                "run_id": run.id if run else None,
                "num_classes": len(art.class_names or []),
            })
    rows.sort(key=lambda r: (r["experiment"] or "", r["dataset"], r["split"], r["model"], mode_rank(r["mode"]),
                             r["artifact_id"], EVAL_SETTINGS.index(r["setting"]), r["attack"], r["epsilon"] or 0,
                             r["attack_key"]))
    return rows


def training_runs(db: Database, experiment_id: int | None = None) -> list[dict]:
    query = (select(RunRow, ArtifactRow, JobRow)
             .outerjoin(ArtifactRow, ArtifactRow.id == RunRow.artifact_id)
             .outerjoin(JobRow, JobRow.id == RunRow.store_job_id)
             .order_by(RunRow.id))
    if experiment_id is not None:
        query = query.where(RunRow.experiment_id == experiment_id)
    out = []
    with db.session() as s:
        for run, art, store_job in s.execute(query):
            history = run.history or {}
            out.append({
                "run_id": run.id, "model": run.architecture, "mode": run.mode, "status": run.status,
                "artifact_id": art.id if art else None, "num_params": art.num_params if art else None,
                "weights": art.weights if art else None, "epochs": run.epochs_run,
                "wall_seconds": run.wall_seconds, "generation_seconds": run.generation_seconds,
                "gradient_evals": run.gradient_evals, "generation_gradient_evals": run.generation_gradient_evals,
                "examples_seen": run.examples_seen, "probe_epochs": _probe_epochs(run, art),
                "val_accuracy": (history.get("val_accuracy") or [None])[-1],
                "store_job_id": store_job.id if store_job else None, "params": run.params,
                "experiment_id": run.experiment_id, "error": run.error,
            })
    return out


def ranking(db: Database, experiment: int | str, by: str | None = None) -> dict:
    """The configurations of a sweep experiment, best first by white-box accuracy under ``by``
    (an attack key, or ``clean``; default: the first PGD attack evaluated, else FGSM, else clean).
    Each row gives the grid's values of its run, its accuracies and its compute."""
    exp = find_experiment(db, experiment)
    grid = (exp.config or {}).get("grid") or {}
    runs = training_runs(db, exp.id)
    accuracy: dict[int, dict[str, float]] = {}
    attacks: list[str] = []
    for row in results(db, exp.id):
        if row["setting"] == TRANSFER or row["run_id"] is None:
            continue
        key = CLEAN if row["setting"] == CLEAN else row["attack_key"]
        accuracy.setdefault(row["run_id"], {})[key] = row["accuracy"]
        if key not in attacks:
            attacks.append(key)
    attacks.sort(key=lambda k: (k != CLEAN, not k.startswith("pgd"), k))
    if by is None:
        by = next((k for k in attacks if k.startswith("pgd")), next((k for k in attacks if k != CLEAN), CLEAN))
    elif attacks and by not in attacks:
        raise ConfigError(f"--by {by!r} is not among this experiment's evaluations: {', '.join(attacks)}")
    rows = []
    for run in runs:
        train = (run["params"] or {}).get("train") or {}
        rows.append({
            "run_id": run["run_id"], "status": run["status"],
            "config": {k: run["mode"] if k == "mode" else train.get(k) for k in grid},
            "accuracy": accuracy.get(run["run_id"], {}), "val_accuracy": run["val_accuracy"],
            "wall_seconds": run["wall_seconds"], "gradient_evals": run["gradient_evals"],
        })
    rows.sort(key=lambda r: (r["accuracy"].get(by) is None, -(r["accuracy"].get(by) or 0.0), r["run_id"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"experiment": exp.name, "grid": grid, "by": by, "attacks": attacks, "rows": rows}


def _probe_epochs(run, art) -> int | None:
    """Head-only epochs before fine-tuning; only models with a pretrained backbone have them."""
    probe = ((run.params or {}).get("train") or {}).get("probe_epochs")
    return probe if probe and run.architecture != "tiny_cnn" else None


def jobs(db: Database, limit: int = 20, parent_id: int | None = None) -> list[Job]:
    """The newest top-level jobs (or children of ``parent_id``), newest first."""
    query = select(JobRow).order_by(JobRow.id.desc()).limit(limit)
    query = query.where(JobRow.parent_id == parent_id) if parent_id is not None else query.where(JobRow.parent_id.is_(None))
    with db.session() as s:
        return [record(row) for row in s.scalars(query)]


def job_view(db: Database, job_id: int) -> dict:
    """What `ferqueue status` shows of a job: the job, and its shards or its child steps (each
    with its shards done), and how many of those are done."""
    top = job(db, job_id)
    if top.n_shards:
        rows = shards(db, job_id)
        return {"job": top, "shards": rows, "done": sum(s.done for s in rows), "total": len(rows), "unit": "shards"}
    kids = children(db, job_id)
    with db.session() as s:
        done_shards = dict(s.execute(select(ShardRow.job_id, func.count(ShardRow.id))
                                     .where(ShardRow.job_id.in_([k.id for k in kids]), ShardRow.status == DONE)
                                     .group_by(ShardRow.job_id)).all())
    steps = [{"job": kid, "shards_done": done_shards.get(kid.id, 0)} for kid in kids or [top]]
    total = len(top.spec.get("steps") or [top])
    done = sum(k.status == DONE for k in kids) if kids else int(top.status == DONE)
    return {"job": top, "steps": steps, "done": done, "total": total, "unit": "steps"}


def evaluations(db: Database, ids: list[int]) -> dict[int, Evaluation]:
    with db.session() as s:
        return {row.id: record(row) for row in s.scalars(select(EvaluationRow).where(EvaluationRow.id.in_(ids)))}


def histories(db: Database, run_ids: list[int]) -> dict[int, dict]:
    """The per-epoch history of each training run."""
    with db.session() as s:
        return {run_id: history or {} for run_id, history in
                s.execute(select(RunRow.id, RunRow.history).where(RunRow.id.in_(run_ids)))}


def unmapped_record(db: Database, experiment_id: int) -> dict | None:
    """What class mapping left out of an experiment's latest clean cross-dataset evaluation."""
    with db.session() as s:
        return s.scalar(select(EvaluationRow.unmapped).where(EvaluationRow.experiment_id == experiment_id,
                                                             EvaluationRow.setting == CLEAN)
                        .order_by(EvaluationRow.id.desc()))


def comparison(db: Database, experiment_id: int) -> dict:
    """An experiment's accuracies pivoted by training mode (one value per split/fold), and its
    compute per mode: training, plus the generation job each offline run consumed."""
    rows = results(db, experiment_id)
    modes = [m for m in TRAINING_MODES if any(r["mode"] == m for r in rows)]
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r["setting"], r["attack_key"])
        cell = cells.setdefault(key, {"setting": r["setting"], "attack": r["attack_key"], "epsilon": r["epsilon"],
                                      "values": {}})
        cell["values"].setdefault(r["mode"], []).append(r["accuracy"])
    accuracy = sorted(cells.values(), key=lambda c: (EVAL_SETTINGS.index(c["setting"]), c["attack"].split("-")[0],
                                                     c["epsilon"] or 0, c["attack"]))
    compute = {}
    for run in training_runs(db, experiment_id):
        if run["status"] != DONE:
            continue
        c = compute.setdefault(run["mode"], {"mode": run["mode"], "train_seconds": 0.0, "generation_seconds": 0.0,
                                             "gradient_evals": 0, "generation_evals": 0, "examples_seen": 0})
        c["train_seconds"] += run["wall_seconds"] or 0.0
        c["generation_seconds"] += run["generation_seconds"] or 0.0
        c["gradient_evals"] += run["gradient_evals"] or 0
        c["generation_evals"] += run["generation_gradient_evals"] or 0
        c["examples_seen"] += run["examples_seen"] or 0
    for c in compute.values():
        c["total_seconds"] = c["train_seconds"] + c["generation_seconds"]
        c["total_evals"] = c["gradient_evals"] + c["generation_evals"]
    n_splits = max((len(v) for cell in cells.values() for v in cell["values"].values()), default=0)
    num_classes = max((r["num_classes"] for r in rows), default=0)
    return {"modes": modes, "accuracy": accuracy, "n_splits": n_splits,
            "compute": [compute[m] for m in TRAINING_MODES if m in compute],
            "gradient_masking": gradient_masking(accuracy, modes, num_classes)}


_GRADIENT_ATTACK = re.compile(r"^(fgsm|pgd)-eps([0-9.e-]+)(?:-steps(\d+))?$")
# how much higher a stronger attack may score before it counts against the model (noise of a
# small test set), and how far above chance the accuracy at eps >= 0.1 may stay
MASKING_SLACK, CHANCE_SLACK = 0.02, 0.10


def gradient_masking(accuracy: list[dict], modes: list[str], num_classes: int) -> dict[str, list[str] | None]:
    """Signs that a model's gradients mislead the attacks rather than that it is robust, per
    mode (mean over splits), from the white-box plain FGSM and PGD rows there are: PGD with more
    steps scoring higher than with fewer, PGD scoring higher than FGSM at the same eps, and
    accuracy at eps >= 0.1 well above chance. An empty list: nothing seen; None: nothing to
    check (no two such attacks at one eps, and none at eps >= 0.1)."""
    by_mode: dict[str, dict[float, dict[int, float]]] = {m: {} for m in modes}
    for cell in accuracy:
        match = _GRADIENT_ATTACK.match(cell["attack"]) if cell["setting"] == "whitebox" else None
        if not match:
            continue
        eps, steps = float(match.group(2)), int(match.group(3) or 0)  # FGSM: 0 steps of PGD
        for mode, values in cell["values"].items():
            if mode in by_mode:
                by_mode[mode].setdefault(eps, {})[steps] = sum(values) / len(values)
    flags: dict[str, list[str] | None] = {}
    chance = 1.0 / num_classes if num_classes else None
    for mode, grid in by_mode.items():
        if not any(len(ladder) > 1 or (eps >= 0.1 and chance) for eps, ladder in grid.items()):
            flags[mode] = None
            continue
        found = []
        for eps in sorted(grid):
            ladder = sorted(grid[eps].items())  # FGSM first, then PGD by steps
            for (weak, weak_acc), (strong, strong_acc) in zip(ladder, ladder[1:], strict=False):
                if strong_acc > weak_acc + MASKING_SLACK:
                    found.append(f"{_attack_name(strong)} {strong_acc:.3f} > {_attack_name(weak)} {weak_acc:.3f} "
                                 f"at eps {eps:g}")
            if chance is not None and eps >= 0.1 and min(grid[eps].values()) > chance + CHANCE_SLACK:
                found.append(f"{min(grid[eps].values()):.3f} at eps {eps:g}, chance is {chance:.3f}")
        flags[mode] = found
    return flags


def _attack_name(steps: int) -> str:
    return f"PGD-{steps}" if steps else "FGSM"


def ledger_counts(db: Database) -> dict:
    """What ``ferqueue metrics`` exports: jobs by kind and status; shards by their job's kind and
    status, with their attempts summed; and each unfinished job's shards by status."""
    with db.session() as s:
        jobs_by_state = s.execute(select(JobRow.kind, JobRow.status, func.count(JobRow.id))
                                  .group_by(JobRow.kind, JobRow.status)).all()
        shards_by_state = s.execute(
            select(JobRow.kind, ShardRow.status, func.count(ShardRow.id), func.coalesce(func.sum(ShardRow.attempts), 0))
            .join(JobRow, JobRow.id == ShardRow.job_id).group_by(JobRow.kind, ShardRow.status)).all()
        active = s.execute(
            select(JobRow.id, JobRow.kind, ShardRow.status, func.count(ShardRow.id))
            .join(JobRow, JobRow.id == ShardRow.job_id).where(JobRow.status.in_(ACTIVE_JOB_STATES))
            .group_by(JobRow.id, JobRow.kind, ShardRow.status)).all()
    return {"jobs": [{"kind": k, "status": st, "count": n} for k, st, n in jobs_by_state],
            "shards": [{"kind": k, "status": st, "count": n, "attempts": int(a)} for k, st, n, a in shards_by_state],
            "active_job_shards": [{"job_id": j, "kind": k, "status": st, "count": n} for j, k, st, n in active]}
