"""Tables and views: what the commands print, made from what ferqueue.app and ferqueue.db return."""

from __future__ import annotations

import csv
import json
import sys

import click
import numpy as np
from rich.console import Group
from rich.progress_bar import ProgressBar
from rich.table import Table

from ferqueue.db.ledger import now
from ferqueue.vocabulary import RUNNING


def fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def ago(moment, until=None) -> str:
    """Seconds from ``moment`` to ``until`` (default: now), or '-'."""
    if moment is None:
        return "-"
    return f"{((until or now()) - moment).total_seconds():.1f}"


def table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    made = Table(title=title)
    for col in columns:
        made.add_column(col, justify="right" if col in right else "left")
    return made


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, default=str))


def echo_csv(rows: list[dict]) -> None:
    if rows:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def results_table(rows: list[dict]) -> Table:
    right = ("ε", "n", "accuracy", "F1 (w)", "attack success", "confidence")
    made = table("results: accuracy on the test set, clean and under attack",
                 ["experiment", "model", "training", "data/split", "setting", "attack", *right], right)
    for r in rows:
        made.add_row(r["experiment"] or "-", f"{r['model']}#{r['artifact_id']}", r["mode"],
                     f"{r['dataset']}/{r['split']}", r["setting"], r["attack_key"], fmt(r["epsilon"], 2), str(r["n"]),
                     fmt(r["accuracy"]), fmt(r["f1_weighted"]), fmt(r["success_rate"]), fmt(r["mean_confidence"], 3))
    return made


def epochs_text(run: dict) -> str:
    """Fine-tuning epochs, plus the head-only probe epochs that came first ('10+100p')."""
    if run["epochs"] is None:
        return "-"
    return f"{run['epochs']}" + (f"+{run['probe_epochs']}p" if run["probe_epochs"] else "")


def runs_table(rows: list[dict]) -> Table:
    made = table("training runs (the paper's Table 1: parameters, time, accuracy)",
                 ["run", "model", "training", "status", "parameters", "weights", "epochs", "train s",
                  "generation s", "gradient evals", "val accuracy"])
    for r in rows:
        made.add_row(str(r["run_id"]), r["model"], r["mode"], r["status"],
                     f"{r['num_params']:,}" if r["num_params"] else "-", r["weights"] or "-", epochs_text(r),
                     fmt(r["wall_seconds"], 1), fmt(r["generation_seconds"], 1),
                     f"{r['gradient_evals']:,}" if r["gradient_evals"] is not None else "-", fmt(r["val_accuracy"]))
    return made


def comparison_tables(data: dict) -> tuple[Table, Table]:
    """The accuracy of each training mode side by side (mean ± std over folds), and the compute."""
    modes, folds = data["modes"], data["n_splits"]
    title = "accuracy on the test set" + (f", mean ± std over {folds} folds" if folds > 1 else "")
    accuracy = table(title, ["setting", "attack", "ε", *modes], ("ε", *modes))
    for row in data["accuracy"]:
        cells = []
        for mode in modes:
            values = row["values"].get(mode)
            if not values:
                cells.append("-")
            elif folds > 1:
                cells.append(f"{np.mean(values):.4f} ± {np.std(values):.4f}")
            else:
                cells.append(f"{values[0]:.4f}")
        accuracy.add_row(row["setting"], row["attack"], fmt(row["epsilon"], 2), *cells)
    columns = ["training", "train s", "generation s", "total s", "gradient evals", "generation evals", "total evals",
               "examples seen"]
    compute = table("compute (summed over folds): training, plus the generation job an offline run consumes",
                    columns, tuple(columns[1:]))
    for row in data["compute"]:
        compute.add_row(row["mode"], fmt(row["train_seconds"], 1), fmt(row["generation_seconds"], 1),
                        fmt(row["total_seconds"], 1), f"{row['gradient_evals']:,}", f"{row['generation_evals']:,}",
                        f"{row['total_evals']:,}", f"{row['examples_seen']:,}")
    return accuracy, compute


def jobs_table(rows) -> Table:
    made = table("jobs", ["id", "kind", "status", "executor", "experiment", "created", "seconds", "error"])
    for job in rows:
        made.add_row(str(job.id), job.kind, job.status, job.executor, str(job.experiment_id or "-"),
                     f"{job.created_at:%Y-%m-%d %H:%M:%S}", fmt(job.seconds, 1), (job.error or "")[:60])
    return made


def status_view(view: dict) -> Group:
    """A progress bar over a job's shards or steps, and a table of them."""
    job = view["job"]
    title = f"job {job.id}: {job.kind}, {job.status}" + (f" — {job.error}" if job.error else "")
    if view["unit"] == "shards":
        made = table(title, ["shard", "attack", "range", "status", "attempts", "worker", "seconds", "success"])
        for s in view["shards"]:
            # a running shard shows how long its current attempt has been going
            seconds = fmt(s.seconds, 1) if s.seconds is not None else ago(s.started_at) if s.status == RUNNING else "-"
            made.add_row(str(s.index), s.attack_key, f"{s.start}:{s.stop}", s.status, str(s.attempts), s.worker or "-",
                         seconds, f"{s.n_success}/{s.n_examples}" if s.n_examples is not None else "-")
    else:
        made = table(title, ["job", "step", "kind", "status", "progress", "seconds", "result"])
        for step in view["steps"]:
            kid = step["job"]
            progress = f"{step['shards_done']}/{kid.n_shards} shards" if kid.n_shards else "-"
            outcome = kid.error or (str(kid.result)[:60] if kid.result else "")
            made.add_row(str(kid.id), kid.step or "-", kid.kind, kid.status, progress,
                         ago(kid.started_at, kid.finished_at), outcome)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(view["total"], 1), completed=view["done"], width=40),
                f"{view['done']}/{view['total']} {view['unit']}", f"{ago(job.started_at, job.finished_at)} s")
    return Group(bar, made)


def outcomes_table(job_id: int, rows: list[dict]) -> Table:
    right = ("source index", "confidence", "queries", "L-inf", "L0")
    made = table(f"job {job_id}: per-example outcomes", ["part", "source index", "label", "clean", "under attack",
                                                         "confidence", "fell", "queries", "L-inf", "L0"], right)
    for r in rows:
        made.add_row(r["part"], str(r["source_index"]), r["label"], r["clean_prediction"], r["prediction"],
                     fmt(r["confidence"], 3), "yes" if r["prediction"] != r["label"] else "no", str(r["queries"]),
                     fmt(r["linf"], 4), str(r["l0"]))
    return made


def store_table(path, summary: list[dict]) -> Table:
    made = table(f"store {path}", ["attack key", "params", "examples", "read as", "kept as", "bytes/example",
                                   "success rate", "mean queries"])
    for row in summary:
        made.add_row(row["attack_key"], json.dumps(row["params"]), str(row["n_examples"]), row["dtype"],
                     ",".join(row["encodings"]), fmt(row["bytes_per_example"], 1), fmt(row["success_rate"]),
                     fmt(row["mean_queries"], 1))
    return made
