"""Queries behind the results tables."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from ferqueue.db.models import (
    DatasetRow,
    Evaluation,
    Experiment,
    Job,
    ModelArtifact,
    SplitRow,
    TrainingRun,
)
from ferqueue.db.session import Database


def results(db: Database, experiment_id: int | None = None, setting: str | None = None) -> list[dict]:
    """One row per model x training mode x setting x attack x epsilon: the latest evaluation."""
    latest = (
        select(func.max(Evaluation.id).label("id"))
        .group_by(Evaluation.artifact_id, Evaluation.dataset_id, Evaluation.split_id, Evaluation.subset,
                  Evaluation.setting, Evaluation.attack_key, Evaluation.source_artifact_id)
    )
    if experiment_id is not None:
        latest = latest.where(Evaluation.experiment_id == experiment_id)
    if setting is not None:
        latest = latest.where(Evaluation.setting == setting)
    query = (
        select(Evaluation, ModelArtifact, TrainingRun, DatasetRow, SplitRow, Experiment)
        .join(ModelArtifact, ModelArtifact.id == Evaluation.artifact_id)
        .outerjoin(TrainingRun, TrainingRun.id == Evaluation.training_run_id)
        .join(DatasetRow, DatasetRow.id == Evaluation.dataset_id)
        .outerjoin(SplitRow, SplitRow.id == Evaluation.split_id)
        .outerjoin(Experiment, Experiment.id == Evaluation.experiment_id)
        .where(Evaluation.id.in_(latest))
    )
    rows = []
    with db.session() as s:
        for ev, art, run, ds, split, exp in s.execute(query):
            rows.append({
                "experiment": exp.name if exp else None,
                "evaluation_id": ev.id,
                "artifact_id": art.id,
                "model": art.architecture,
                "mode": run.mode if run else "external",
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
            })
    order = {"clean": 0, "whitebox": 1, "transfer": 2}
    modes = {"standard": 0, "offline_adv": 1, "online_fgsm": 2, "online_fgsm_rs": 3}
    rows.sort(key=lambda r: (r["experiment"] or "", r["dataset"], r["split"], r["model"], modes.get(r["mode"], 9),
                             r["artifact_id"], order[r["setting"]], r["attack"], r["epsilon"] or 0, r["attack_key"]))
    return rows


def training_runs(db: Database, experiment_id: int | None = None) -> list[dict]:
    query = (select(TrainingRun, ModelArtifact, Job)
             .outerjoin(ModelArtifact, ModelArtifact.id == TrainingRun.artifact_id)
             .outerjoin(Job, Job.id == TrainingRun.store_job_id)
             .order_by(TrainingRun.id))
    if experiment_id is not None:
        query = query.where(TrainingRun.experiment_id == experiment_id)
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
                "examples_seen": run.examples_seen,
                "val_accuracy": (history.get("val_accuracy") or [None])[-1],
                "store_job_id": store_job.id if store_job else None, "params": run.params,
                "experiment_id": run.experiment_id, "error": run.error,
            })
    return out


def jobs(db: Database, limit: int = 20, parent_id: int | None = None) -> list[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    query = query.where(Job.parent_id == parent_id) if parent_id is not None else query.where(Job.parent_id.is_(None))
    with db.session() as s:
        return list(s.scalars(query))


def transfer_source(db: Database, artifact_id: int) -> ModelArtifact | None:
    alias = aliased(ModelArtifact)
    with db.session() as s:
        return s.scalar(select(alias).where(alias.id == artifact_id))


MODE_ORDER = ("standard", "offline_adv", "online_fgsm", "online_fgsm_rs")


def comparison(db: Database, experiment_id: int) -> dict:
    """An experiment's accuracies pivoted by training mode (one value per split/fold), and its
    compute per mode: training, plus the generation job each offline run consumed."""
    rows = results(db, experiment_id)
    modes = [m for m in MODE_ORDER if any(r["mode"] == m for r in rows)]
    cells: dict[tuple, dict] = {}
    for r in rows:
        key = (r["setting"], r["attack_key"])
        cell = cells.setdefault(key, {"setting": r["setting"], "attack": r["attack_key"], "epsilon": r["epsilon"],
                                      "values": {}})
        cell["values"].setdefault(r["mode"], []).append(r["accuracy"])
    order = {"clean": 0, "whitebox": 1, "transfer": 2}
    accuracy = sorted(cells.values(), key=lambda c: (order[c["setting"]], c["attack"].split("-")[0],
                                                     c["epsilon"] or 0, c["attack"]))
    compute = {}
    for run in training_runs(db, experiment_id):
        if run["status"] != "done":
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
    return {"modes": modes, "accuracy": accuracy, "n_splits": n_splits,
            "compute": [compute[m] for m in MODE_ORDER if m in compute]}
