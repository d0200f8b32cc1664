"""Reports: PNG plots, a Markdown summary and a self-contained HTML page of an experiment (or of one
training run).

- curves-run<N>.png: loss and accuracy per epoch, training and validation (the paper's Fig. 9);
- confusion-<model>.png: confusion matrices, clean and under attack (Fig. 10);
- accuracy-vs-eps.png: accuracy against epsilon per model, attack and setting;
- examples-<model>.png: original, FGSM and one-pixel images with prediction and confidence
  (Figs. 4-7), the attacks re-run on that model;
- summary.md: the paper's Table 1 (parameters, time, accuracy), compute, results and the
  classification report of every model;
- index.html: the same tables and every plot on one page that opens from the folder without
  a server (the PNGs are embedded).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from ferqueue.db import ledger
from ferqueue.db.domain import Artifact, DatasetRecord, Evaluation, SplitRecord
from ferqueue.db.queries import comparison, evaluations, histories, results, training_runs
from ferqueue.errors import LedgerError
from ferqueue.runtime import Runtime
from ferqueue.vocabulary import CLEAN, EXTERNAL, TRAINING_MODES, WHITEBOX

# one colour per training mode, in the modes' own order
MODE_STYLE = {**dict(zip(TRAINING_MODES, ("tab:blue", "tab:red", "tab:pink", "tab:green", "tab:purple",
                                           "tab:olive", "tab:orange", "tab:brown"), strict=True)),
              EXTERNAL: "tab:gray"}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    """Lay the figure out, write it as a PNG and free it."""
    plt = _plt()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label(row: dict) -> str:
    return f"{row['model']}#{row['artifact_id']} {row['mode']}"


def plot_curves(run: dict, history: dict, out: Path) -> Path:
    plt = _plt()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    ax_loss.plot(epochs, history.get("loss", []), "o-", label="train")
    ax_loss.plot(epochs, history.get("val_loss", [])[: len(epochs)], "s-", label="validation (test split)")
    ax_acc.plot(epochs, history.get("accuracy", []), "o-", label="train")
    ax_acc.plot(epochs, history.get("val_accuracy", [])[: len(epochs)], "s-", label="validation (test split)")
    probe = history.get("probe_val_accuracy") or []
    if probe:
        ax_acc.axhline(probe[-1], color="gray", ls=":", label=f"linear probe ({len(probe)} epochs)")
    ax_loss.set(title="loss", xlabel="epoch")
    ax_acc.set(title="accuracy", xlabel="epoch", ylim=(0, 1.02))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"run {run['run_id']}: {run['model']} {run['mode']}")
    return _save(fig, out / f"curves-run{run['run_id']}.png")


def plot_confusions(evals: list[Evaluation], title: str, out: Path, stem: str) -> Path:
    plt = _plt()
    n = len(evals)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, ev in zip(axes.flat, evals, strict=False):
        matrix = np.array(ev.confusion)
        ax.imshow(matrix, cmap="Blues")
        names = [c[:5] for c in ev.class_names]
        ax.set_xticks(range(len(names)), names, rotation=60, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        for (i, j), v in np.ndenumerate(matrix):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > matrix.max() / 2 else "black")
        what = CLEAN if ev.setting == CLEAN else f"{ev.setting} {ev.attack_key}"
        ax.set_title(f"{what}\naccuracy {ev.accuracy:.3f}", fontsize=9)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
    fig.suptitle(title)
    return _save(fig, out / f"confusion-{stem}.png")


def plot_accuracy_vs_eps(rows: list[dict], out: Path) -> Path | None:
    series: dict[tuple, list] = {}
    clean = {}
    for r in rows:
        if r["setting"] == CLEAN:
            clean[r["artifact_id"]] = r["accuracy"]
        elif r["epsilon"] is not None:
            series.setdefault((_label(r), r["mode"], r["attack"], r["setting"], r["artifact_id"]), []).append(
                (r["epsilon"], r["accuracy"]))
    if not series:
        return None
    plt = _plt()
    attacks = sorted({key[2] for key in series})
    fig, axes = plt.subplots(1, len(attacks), figsize=(6 * len(attacks), 4.5), squeeze=False)
    for ax, attack in zip(axes.flat, attacks, strict=True):
        for (label, mode, name, setting, artifact_id), points in sorted(series.items()):
            if name != attack:
                continue
            points = sorted(points)
            xs = [0.0, *[p[0] for p in points]]
            ys = [clean.get(artifact_id, np.nan), *[p[1] for p in points]]
            ax.plot(xs, ys, "o-" if setting == WHITEBOX else "s--", color=MODE_STYLE.get(mode),
                    alpha=1.0 if setting == WHITEBOX else 0.6, label=f"{label} ({setting})")
        ax.set(title=f"{attack}: white-box (solid) and transfer (dashed)", xlabel="ε", ylabel="accuracy",
               ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, out / "accuracy-vs-eps.png")


def plot_examples(rt: Runtime, artifact: Artifact, ds_row: DatasetRecord, split_row: SplitRecord, out: Path,
                  label: str, eps: float = 0.01, n: int = 4, pixel_queries: int = 100) -> Path:
    """Original, FGSM and one-pixel versions of a few test images, attacked on this model."""
    from ferqueue.attacks import FGSM, PixelAttack

    dataset = rt.dataset(ds_row)
    split = rt.split(dataset, split_row)
    labels = dataset.labels[split.test]
    _, first = np.unique(labels, return_index=True)  # one test image per class, in class order
    x, y = dataset.take(split.test[np.sort(first)[:n]])
    model = rt.model(artifact)
    fgsm = FGSM(eps)(model, x, y)
    pixel = PixelAttack(k=1, method="random", queries=pixel_queries, seed=0)(model, x, y)
    names = list(ds_row.class_names)
    plt = _plt()
    fig, axes = plt.subplots(len(x), 3, figsize=(8.4, 2.9 * len(x)), squeeze=False)
    columns = [("original", x, fgsm.clean_pred, fgsm.clean_conf), (f"FGSM ε={eps:g}", fgsm.x_adv, fgsm.adv_pred,
               fgsm.adv_conf), (f"one pixel ({pixel_queries} queries)", pixel.x_adv, pixel.adv_pred, pixel.adv_conf)]
    for i in range(len(x)):
        for j, (title, images, pred, conf) in enumerate(columns):
            ax = axes[i, j]
            ax.imshow(np.clip(images[i], 0, 1))
            ax.set_xticks([])
            ax.set_yticks([])
            color = "green" if pred[i] == y[i] else "red"
            ax.set_title(f"{title}\n{names[pred[i]]} ({conf[i] * 100:.1f}%)", fontsize=8, color=color)
            if j == 0:
                ax.set_ylabel(f"true: {names[y[i]]}", fontsize=8)
            if j == 2:  # circle the changed pixel
                diff = np.abs(pixel.x_adv[i] - x[i]).max(axis=-1)
                r, c = np.unravel_index(np.argmax(diff), diff.shape)
                ax.add_patch(plt.Circle((c, r), radius=max(2, x.shape[1] / 25), fill=False, color="yellow", lw=1.2))
    fig.suptitle(label)
    return _save(fig, out / f"examples-{artifact.architecture}-{artifact.id}.png")


@dataclass(frozen=True)
class Section:
    """One table of the report, written to summary.md and index.html alike."""

    heading: str
    header: list[str]
    body: list[list]
    note: str = ""


def _md_table(header: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _f(value, digits=4):
    return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def write_report(rt: Runtime, out: Path, experiment: str | None = None, run_id: int | None = None,
                 examples: bool = True) -> list[Path]:
    """Write the report folder for an experiment (name or id) or a single training run."""
    out = Path(out)
    if run_id is not None:
        run_row = ledger.run(rt.db, run_id)
        exp_id = run_row.experiment_id
        runs = [r for r in training_runs(rt.db, exp_id) if r["run_id"] == run_id]
        artifact_ids = {run_row.artifact_id}
        title = f"training run {run_id}"
    else:
        exp = ledger.find_experiment(rt.db, experiment)
        exp_id = exp.id
        runs = training_runs(rt.db, exp_id)
        artifact_ids = {r["artifact_id"] for r in runs if r["artifact_id"]}
        title = f"experiment {exp.name}"
    rows = [r for r in results(rt.db, exp_id) if r["artifact_id"] in artifact_ids]
    if not runs:
        raise LedgerError(f"{title} has no training runs to report")
    out.mkdir(parents=True, exist_ok=True)  # only once there is something to report
    written: list[Path] = []
    history = histories(rt.db, [r["run_id"] for r in runs])
    evals = evaluations(rt.db, [r["evaluation_id"] for r in rows])
    for r in runs:
        if history[r["run_id"]].get("loss"):
            written.append(plot_curves(r, history[r["run_id"]], out))
    by_artifact: dict[int, list[dict]] = {}
    for r in rows:
        by_artifact.setdefault(r["artifact_id"], []).append(r)
    for artifact_id, arows in sorted(by_artifact.items()):
        chosen = _confusion_choice(arows)
        written.append(plot_confusions([evals[r["evaluation_id"]] for r in chosen], _label(arows[0]), out,
                                       f"{arows[0]['model']}-{artifact_id}"))
    curve = plot_accuracy_vs_eps(rows, out)
    if curve:
        written.append(curve)
    if examples:
        for artifact_id, arows in sorted(by_artifact.items()):
            ev = evals[arows[0]["evaluation_id"]]
            if ev.split_id is None:
                continue
            written.append(plot_examples(rt, ledger.artifact(rt.db, artifact_id), ledger.dataset(rt.db, ev.dataset_id),
                                         ledger.split(rt.db, ev.split_id), out, _label(arows[0])))
    sections = _sections(rt, exp_id, runs, rows, evals)
    figures = [p for p in written if p.suffix == ".png"]
    summary = out / "summary.md"
    summary.write_text(_markdown(title, sections, figures))
    page = out / "index.html"
    page.write_text(_html(title, sections, figures), encoding="utf-8")
    return [*written, summary, page]


def _confusion_choice(arows: list[dict]) -> list[dict]:
    """Clean, then the weakest-ε white-box FGSM and PGD, and the one-pixel attack."""
    chosen = [r for r in arows if r["setting"] == CLEAN]
    for attack in ("fgsm", "pgd", "pixel"):
        candidates = [r for r in arows if r["setting"] == WHITEBOX and r["attack"] == attack]
        if candidates:
            chosen.append(min(candidates, key=lambda r: r["epsilon"] or 0))
    return chosen


def _epochs(run: dict) -> str:
    """Fine-tuning epochs, plus the head-only probe epochs that came first (e.g. '10 + 100 probe')."""
    return f"{run['epochs']} + {run['probe_epochs']} probe" if run["probe_epochs"] else str(run["epochs"])


def _sections(rt, exp_id, runs, rows, evals) -> tuple[list[Section], list[Section]]:
    """(the summary: Table 1, the comparison by training mode and its compute; the details:
    every evaluation and the per-class report of every model on its clean test set)."""
    clean = {r["artifact_id"]: r for r in rows if r["setting"] == CLEAN}
    sections = [Section(
        "Table 1: models (parameters, training time, accuracy)",
        ["run", "model", "training", "parameters", "weights", "epochs", "training s", "generation s (offline)",
         "clean test accuracy", "F1 (weighted)"],
        [[r["run_id"], r["model"], r["mode"], f"{r['num_params']:,}" if r["num_params"] else "-", r["weights"] or "-",
          _epochs(r), _f(r["wall_seconds"], 1), _f(r["generation_seconds"], 1),
          _f(clean.get(r["artifact_id"], {}).get("accuracy")), _f(clean.get(r["artifact_id"], {}).get("f1_weighted"))]
         for r in runs])]
    if exp_id is not None:
        comp = comparison(rt.db, exp_id)
        if comp["modes"]:
            sections.append(Section(
                "Accuracy by training mode", ["setting", "attack", "ε", *comp["modes"]],
                [[c["setting"], c["attack"], _f(c["epsilon"], 2),
                  *[_f(float(np.mean(c["values"][m]))) if c["values"].get(m) else "-" for m in comp["modes"]]]
                 for c in comp["accuracy"]],
                "White-box attacks are re-run on the model being judged; transfer examples were made once against "
                "another model (the baseline), so a transfer row is not white-box robustness."))
            sections.append(Section(
                "Compute", ["training", "train s", "generation s", "total s", "gradient evals", "generation evals",
                            "examples seen"],
                [[c["mode"], _f(c["train_seconds"], 1), _f(c["generation_seconds"], 1), _f(c["total_seconds"], 1),
                  f"{c['gradient_evals']:,}", f"{c['generation_evals']:,}", f"{c['examples_seen']:,}"]
                 for c in comp["compute"]]))
    details = [Section(
        "All evaluations", ["model", "training", "setting", "attack", "ε", "n", "accuracy", "precision (w)",
                            "recall (w)", "F1 (w)", "attack success", "confidence"],
        [[f"{r['model']}#{r['artifact_id']}", r["mode"], r["setting"], r["attack_key"], _f(r["epsilon"], 2), r["n"],
          _f(r["accuracy"]), _f(r["precision_weighted"]), _f(r["recall_weighted"]), _f(r["f1_weighted"]),
          _f(r["success_rate"]), _f(r["mean_confidence"], 3)] for r in rows])]
    for _artifact_id, row in sorted(clean.items()):
        report = evals[row["evaluation_id"]].report
        classes = [k for k in report if isinstance(report[k], dict) and k not in ("macro avg", "weighted avg")]
        details.append(Section(
            f"Classification report: {_label(row)} (clean test set, accuracy {row['accuracy']:.4f})",
            ["class", "precision", "recall", "f1-score", "support"],
            [[k, _f(report[k]["precision"], 2), _f(report[k]["recall"], 2), _f(report[k]["f1-score"], 2),
              int(report[k]["support"])] for k in (*classes, "macro avg", "weighted avg")]))
    return sections, details


def _markdown(title: str, sections: tuple[list[Section], list[Section]], figures: list[Path]) -> str:
    parts = [f"# ferqueue report: {title}", ""]
    for section in [*sections[0], *sections[1]]:
        parts += [f"## {section.heading}", ""] + ([section.note, ""] if section.note else [])
        parts += [_md_table(section.header, section.body), ""]
    parts += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures]
    return "\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
p.note { color: #555; max-width: 60em; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _html_table(section: Section) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in section.header)
    rows = []
    for row in section.body:
        cells = "".join(f'<td class="num">{escape(str(c))}</td>' if _numeric(c) else f"<td>{escape(str(c))}</td>"
                        for c in row)
        rows.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _numeric(cell) -> bool:
    text = str(cell).replace(",", "")
    return text == "-" or text.replace(".", "", 1).isdigit()


def _html(title: str, sections: tuple[list[Section], list[Section]], figures: list[Path]) -> str:
    """One page that needs nothing beside it (the plots are embedded as data URIs): the summary
    tables, the plots, then every evaluation and the per-class reports."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>ferqueue report: {escape(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>ferqueue report: {escape(title)}</h1>"]
    summary, details = sections
    for section in summary:
        parts += _html_section(section)
    parts.append("<h2>Figures</h2>")
    for path in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f'<figure><img alt="{escape(path.stem)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{escape(path.stem)}</figcaption></figure>")
    for section in details:
        parts += _html_section(section)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_section(section: Section) -> list[str]:
    return [f"<h2>{escape(section.heading)}</h2>", *([f'<p class="note">{escape(section.note)}</p>']
                                                   if section.note else []), _html_table(section)]
