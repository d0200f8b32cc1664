"""Tables and views: what the commands print, made from what ferqueue.app and ferqueue.db return."""

from __future__ import annotations

import csv
import dataclasses
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


class FittedTable(Table):
    """A table whose ``wide_only`` columns are left out unless ``wide``. ``add_row`` takes a
    cell for every column, shown or not, so each table is written once for both widths."""

    def __init__(self, title: str, columns: list[str], right: tuple[str, ...] = (), wide_only: tuple[str, ...] = (),
                 wide: bool = False, limits: dict[str, int] | None = None):
        super().__init__(title=title)
        self.shown = [wide or col not in wide_only for col in columns]
        limits = {} if wide else (limits or {})
        for col, show in zip(columns, self.shown, strict=True):
            if show:  # a limited column cuts long text with an ellipsis instead of wrapping it
                self.add_column(col, justify="right" if col in right else "left", max_width=limits.get(col),
                                no_wrap=col in limits, overflow="ellipsis" if col in limits else "fold")

    def add_row(self, *cells, **kwargs) -> None:
        super().add_row(*(c for c, show in zip(cells, self.shown, strict=True) if show), **kwargs)


def table(title: str, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    return FittedTable(title, columns, right)


def plain(value):
    """``value`` with its frozen records turned into dicts, for JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def emit(out, value, table) -> None:
    """``value`` as JSON, or as the table ``table(wide)`` makes of it, as ``out`` asks."""
    from ferqueue.cli.base import console

    if out.as_table:
        console.print(table(out.wide))
    else:
        echo_json(value)


def echo_json(value) -> None:
    click.echo(json.dumps(plain(value), indent=2, default=str))


def echo_csv(rows: list[dict]) -> None:
    if rows:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# Of the results' context columns, one whose value is the same in every row of a table goes
# into its title instead (unless --wide): one table per experiment, split only when it varies.
_RESULT_CONTEXT = ("data", "split")


def results_tables(rows: list[dict], wide: bool = False) -> list[Table]:
    """The results, one table per experiment: model x training x setting x attack."""
    by_experiment: dict[str | None, list[dict]] = {}
    for r in rows:
        by_experiment.setdefault(r["experiment"], []).append(r)
    return [_results_table(name, part, wide) for name, part in by_experiment.items()]


def results_table(rows: list[dict], wide: bool = False) -> Group:
    return Group(*results_tables(rows, wide))


def _results_table(experiment: str | None, rows: list[dict], wide: bool) -> Table:
    context = {"data": {r["dataset"] for r in rows}, "split": {r["split"] for r in rows}}
    constant = {name: next(iter(values)) for name, values in context.items() if len(values) == 1 and not wide}
    title = f"experiment {experiment or '-'}: accuracy on the test set"
    right = ("ε", "n", "accuracy", "success", "F1 (w)", "precision (w)", "recall (w)", "confidence", "queries")
    columns = ["model", "training", *(c for c in _RESULT_CONTEXT if c not in constant), "setting", "attack", *right]
    made = FittedTable(title, columns, right, wide=wide,
                       wide_only=("ε", "F1 (w)", "precision (w)", "recall (w)", "confidence", "queries"))
    made.caption = ", ".join(f"{k} {v}" for k, v in constant.items()) or None
    for r in rows:
        cells = {"model": f"{r['model']}#{r['artifact_id']}", "training": r["mode"], "data": r["dataset"],
                 "split": r["split"], "setting": r["setting"], "attack": r["attack_key"],
                 "ε": fmt(r["epsilon"], 2), "n": str(r["n"]), "accuracy": fmt(r["accuracy"]),
                 "success": fmt(r["success_rate"]), "F1 (w)": fmt(r["f1_weighted"]),
                 "precision (w)": fmt(r["precision_weighted"]), "recall (w)": fmt(r["recall_weighted"]),
                 "confidence": fmt(r["mean_confidence"], 3), "queries": fmt(r["mean_queries"], 1)}
        made.add_row(*(cells[c] for c in columns))
    return made


def epochs_text(run: dict) -> str:
    """Fine-tuning epochs, plus the head-only probe epochs that came first ('10+100p')."""
    if run["epochs"] is None:
        return "-"
    return f"{run['epochs']}" + (f"+{run['probe_epochs']}p" if run["probe_epochs"] else "")


def runs_table(rows: list[dict], wide: bool = False) -> Table:
    made = FittedTable("training runs (the paper's Table 1: parameters, time, accuracy)",
                       ["run", "model", "training", "status", "parameters", "weights", "epochs", "train s",
                        "generation s", "gradient evals", "val accuracy"],
                       ("parameters", "train s", "generation s", "gradient evals", "val accuracy"), wide=wide,
                       wide_only=("weights", "gradient evals"))
    for r in rows:
        made.add_row(str(r["run_id"]), r["model"], r["mode"], r["status"],
                     f"{r['num_params']:,}" if r["num_params"] else "-", r["weights"] or "-", epochs_text(r),
                     fmt(r["wall_seconds"], 1), fmt(r["generation_seconds"], 1),
                     f"{r['gradient_evals']:,}" if r["gradient_evals"] is not None else "-", fmt(r["val_accuracy"]))
    return made


def ranking_table(data: dict, wide: bool = False) -> Table:
    """A sweep's configurations, best first: the grid's values, accuracies, compute."""
    keys, attacks = list(data["grid"]), data["attacks"]
    shown = [data["by"], *(a for a in attacks if a != data["by"])]
    made = FittedTable(f"{data['experiment']}: configurations ranked by {data['by']}",
                       ["rank", "run", *keys, *shown, "train s", "gradient evals"],
                       ("rank", "run", *shown, "train s", "gradient evals"), wide=wide,
                       wide_only=(*shown[3:], "gradient evals"), limits={k: max(14, len(k)) for k in keys})
    for r in data["rows"]:
        made.add_row(str(r["rank"]), str(r["run_id"]), *(str(r["config"].get(k)) for k in keys),
                     *(fmt(r["accuracy"].get(a)) for a in shown), fmt(r["wall_seconds"], 1),
                     f"{r['gradient_evals']:,}" if r["gradient_evals"] is not None else "-")
    return made


def comparison_tables(data: dict, wide: bool = False) -> tuple[Table, Table]:
    """The accuracy of each training mode side by side (mean ± std over folds), and the compute."""
    modes, folds = data["modes"], data["n_splits"]
    title = "accuracy on the test set" + (f", mean ± std over {folds} folds" if folds > 1 else "")
    accuracy = FittedTable(title, ["setting", "attack", "ε", *modes], ("ε", *modes), wide=wide, wide_only=("ε",))
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
    masking = data.get("gradient_masking") or {}
    if any(found is not None for found in masking.values()):  # flagged in the table, each sign said below it
        accuracy.add_row("check", "gradient masking", "",
                         *("-" if masking.get(m) is None else "FLAG" if masking[m] else "ok" for m in modes))
        if any(masking.values()):
            accuracy.caption = "gradient masking: " + "; ".join(f"{m}: {', '.join(found)}"
                                                                for m, found in masking.items() if found)
    columns = ["training", "train s", "generation s", "total s", "gradient evals", "generation evals", "total evals",
               "examples seen"]
    compute = FittedTable("compute (summed over folds)", columns, tuple(columns[1:]), wide=wide,
                          wide_only=("gradient evals", "generation evals"))
    compute.caption = "training, plus the generation job an offline run consumes"
    for row in data["compute"]:
        compute.add_row(row["mode"], fmt(row["train_seconds"], 1), fmt(row["generation_seconds"], 1),
                        fmt(row["total_seconds"], 1), f"{row['gradient_evals']:,}", f"{row['generation_evals']:,}",
                        f"{row['total_evals']:,}", f"{row['examples_seen']:,}")
    return accuracy, compute


def jobs_table(rows, wide: bool = False) -> Table:
    made = FittedTable("jobs", ["id", "kind", "status", "executor", "experiment", "created", "seconds", "error"],
                       ("id", "experiment", "seconds"), wide=wide, wide_only=("executor",), limits={"error": 40})
    for job in rows:
        made.add_row(str(job.id), job.kind, job.status, job.executor, str(job.experiment_id or "-"),
                     f"{job.created_at:%Y-%m-%d %H:%M:%S}", fmt(job.seconds, 1), job.error or "")
    return made


def status_view(view: dict, wide: bool = False) -> Group:
    """A progress bar over a job's shards or steps, and a table of them."""
    job = view["job"]
    title = f"job {job.id}: {job.kind}, {job.status}" + (f" — {job.error}" if job.error else "")
    if view["unit"] == "shards":
        # "id" is the shard id Flower shows in a task's arguments; "shard" its index in the job
        made = FittedTable(title, ["shard", "id", "attack", "range", "status", "attempts", "worker", "seconds",
                                   "success"], ("shard", "id", "attempts", "seconds", "success"), wide=wide,
                           limits={"worker": 20, "attack": 28})
        for s in view["shards"]:
            # a running shard shows how long its current attempt has been going
            seconds = fmt(s.seconds, 1) if s.seconds is not None else ago(s.started_at) if s.status == RUNNING else "-"
            made.add_row(str(s.index), str(s.id), s.attack_key, f"{s.start}:{s.stop}", s.status, str(s.attempts),
                         s.worker or "-", seconds, f"{s.n_success}/{s.n_examples}" if s.n_examples is not None else "-")
    else:
        made = FittedTable(title, ["job", "step", "kind", "status", "progress", "seconds", "result"],
                           ("job", "seconds"), wide=wide, wide_only=("kind",), limits={"step": 32, "result": 32})
        for step in view["steps"]:
            kid = step["job"]
            progress = f"{step['shards_done']}/{kid.n_shards} shards" if kid.n_shards else "-"
            outcome = kid.error or (json.dumps(kid.result) if kid.result else "")
            made.add_row(str(kid.id), kid.step or "-", kid.kind, kid.status, progress,
                         ago(kid.started_at, kid.finished_at), outcome)
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(view["total"], 1), completed=view["done"], width=40),
                f"{view['done']}/{view['total']} {view['unit']}", f"{ago(job.started_at, job.finished_at)} s")
    return Group(bar, made)


def outcomes_table(job_id: int, rows: list[dict], wide: bool = False) -> Table:
    right = ("source index", "confidence", "queries", "L-inf", "L0")
    made = FittedTable(f"job {job_id}: per-example outcomes", ["part", "source index", "label", "clean", "under attack",
                                                               "confidence", "fell", "queries", "L-inf", "L0"],
                       right, wide=wide)
    for r in rows:
        made.add_row(r["part"], str(r["source_index"]), r["label"], r["clean_prediction"], r["prediction"],
                     fmt(r["confidence"], 3), "yes" if r["prediction"] != r["label"] else "no", str(r["queries"]),
                     fmt(r["linf"], 4), str(r["l0"]))
    return made


def store_table(path, summary: list[dict], wide: bool = False) -> Table:
    made = FittedTable(f"store {path}", ["attack key", "params", "examples", "read as", "kept as", "bytes/example",
                                         "success rate", "mean queries"],
                       ("examples", "bytes/example", "success rate", "mean queries"), wide=wide, wide_only=("params",))
    for row in summary:
        made.add_row(row["attack_key"], json.dumps(row["params"]), str(row["n_examples"]), row["dtype"],
                     ",".join(row["encodings"]), fmt(row["bytes_per_example"], 1), fmt(row["success_rate"]),
                     fmt(row["mean_queries"], 1))
    return made
