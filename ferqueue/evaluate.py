"""Evaluation: clean and attacked metrics.

Settings, kept apart so that nobody mistakes one for another:
- ``clean``: the untouched test images;
- ``whitebox``: the attack is re-run against the very model being judged;
- ``transfer``: fixed adversarial images made against another (source) model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, precision_recall_fscore_support

from ferqueue.vocabulary import CLEAN, TRANSFER, WHITEBOX


def _probabilities(model, x: np.ndarray) -> np.ndarray:
    from ferqueue.models.engine import forward  # TensorFlow only when a model runs

    return forward(model, x)


# what an evaluation keeps of every example, clean and under one attack (a shard's outcomes)
OUTCOME_FIELDS = ("source_index", "labels", "target", "clean_pred", "clean_conf", "adv_pred", "adv_conf", "success",
                  "queries", "linf", "l0")


@dataclass
class EvalRecord:
    setting: str
    attack: str
    attack_key: str
    attack_params: dict | None
    epsilon: float | None
    n: int
    accuracy: float
    precision_weighted: float
    recall_weighted: float
    f1_weighted: float
    precision_macro: float
    recall_macro: float
    f1_macro: float
    mean_confidence: float
    confusion: list
    report: dict
    class_names: list
    seconds: float
    success_rate: float | None = None
    mean_queries: float | None = None
    mean_linf: float | None = None
    mean_l0: float | None = None
    source_artifact_id: int | None = None  # transfer: the model the stored examples were made against
    predictions: np.ndarray | None = field(default=None, repr=False)

    def columns(self) -> dict:
        """The values that go into an ``evaluations`` row."""
        return {k: v for k, v in self.__dict__.items() if k != "predictions"}


def classification_metrics(y_true: np.ndarray, pred: np.ndarray, confidence: np.ndarray, class_names: list[str],
                           scored: list[int] | None = None) -> dict:
    """sklearn metrics of predictions over the model's classes. ``scored``: the classes that can
    occur as true labels (cross-dataset: the mapped ones); macro averages run over those only,
    so a model class the dataset lacks does not count as a class scored zero. Predicting it is
    still an error."""
    labels = list(range(len(class_names)))
    macro_labels = labels if scored is None else sorted(scored)
    pw, rw, fw, _ = precision_recall_fscore_support(y_true, pred, labels=labels, average="weighted", zero_division=0)
    pm, rm, fm, _ = precision_recall_fscore_support(y_true, pred, labels=macro_labels, average="macro",
                                                    zero_division=0)
    report = classification_report(
        y_true, pred, labels=labels, target_names=list(class_names), output_dict=True, zero_division=0
    )
    return {
        "n": int(len(y_true)),
        "accuracy": float(np.mean(pred == y_true)) if len(y_true) else 0.0,
        "precision_weighted": float(pw),
        "recall_weighted": float(rw),
        "f1_weighted": float(fw),
        "precision_macro": float(pm),
        "recall_macro": float(rm),
        "f1_macro": float(fm),
        "mean_confidence": float(np.mean(confidence)) if len(confidence) else 0.0,
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
        "report": report,
    }


# ---- per-example outcomes: clean, white-box and transfer --------------------------------------


def _outcomes(index, y, clean_pred, clean_conf, adv_pred, adv_conf, success, queries, linf, l0, target=None) -> dict:
    n = len(y)
    return {"source_index": np.asarray(index, np.int64), "labels": np.asarray(y, np.int64),
            "target": np.full(n, -1, np.int64) if target is None else np.asarray(target, np.int64),
            "clean_pred": np.asarray(clean_pred, np.int64), "clean_conf": np.asarray(clean_conf, np.float32),
            "adv_pred": np.asarray(adv_pred, np.int64), "adv_conf": np.asarray(adv_conf, np.float32),
            "success": np.asarray(success, bool), "queries": np.asarray(queries, np.int64),
            "linf": np.asarray(linf, np.float32), "l0": np.asarray(l0, np.int64)}


def clean_outcomes(model, x: np.ndarray, y: np.ndarray, index: np.ndarray) -> dict:
    """The model on untouched images (the 'adversarial' columns repeat the clean ones)."""
    probs = _probabilities(model, x)
    pred, conf = probs.argmax(1), probs.max(1) if len(probs) else np.zeros(0, np.float32)
    zeros = np.zeros(len(y))
    return _outcomes(index, y, pred, conf, pred, conf, np.zeros(len(y), bool), zeros, zeros, zeros)


def whitebox_outcomes(result, index: np.ndarray) -> dict:
    """What an attack re-run on the model being judged did to each image (an AttackResult)."""
    return _outcomes(index, result.labels, result.clean_pred, result.clean_conf, result.adv_pred, result.adv_conf,
                     result.success, result.queries, result.linf, result.l0, result.target)


def transfer_outcomes(model, x_adv: np.ndarray, y: np.ndarray, index: np.ndarray, linf, l0) -> dict:
    """The model on fixed adversarial images made against another model (no clean pass)."""
    probs = _probabilities(model, x_adv)
    pred, conf = probs.argmax(1), probs.max(1) if len(probs) else np.zeros(0, np.float32)
    unknown = np.full(len(y), -1)
    return _outcomes(index, y, unknown, np.zeros(len(y)), pred, conf, pred != np.asarray(y), np.zeros(len(y)), linf, l0)


def join_outcomes(parts: list[dict]) -> dict:
    """Outcomes of several shards of one attack, in order, as one."""
    if not parts:
        return {name: np.zeros(0) for name in OUTCOME_FIELDS}
    return {name: np.concatenate([p[name] for p in parts]) for name in OUTCOME_FIELDS}


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None


def record_from_outcomes(setting: str, outcomes: dict, class_names: list[str], *, attack: str = "none",
                         attack_key: str = "none", params: dict | None = None, scored: list[int] | None = None,
                         seconds: float = 0.0, source_artifact_id: int | None = None) -> EvalRecord:
    """The metrics of one setting and attack from every example's outcome (scikit-learn)."""
    y, pred = outcomes["labels"], outcomes["adv_pred"]
    metrics = classification_metrics(y, pred, outcomes["adv_conf"], class_names, scored)
    extra = {}
    if setting == WHITEBOX:
        targeted = bool(len(y)) and bool((outcomes["target"] >= 0).all())
        # untargeted success only means something where the clean image was right
        attacked = outcomes["success"] if targeted else outcomes["success"][outcomes["clean_pred"] == y]
        extra = {"success_rate": _mean(attacked) if len(attacked) else float("nan"),
                 "mean_queries": _mean(outcomes["queries"]), "mean_linf": _mean(outcomes["linf"]),
                 "mean_l0": _mean(outcomes["l0"])}
    elif setting == TRANSFER:
        extra = {"mean_linf": _mean(outcomes["linf"]), "mean_l0": _mean(outcomes["l0"])}
    return EvalRecord(setting=setting, attack=attack, attack_key=attack_key, attack_params=params,
                      epsilon=(params or {}).get("eps"), class_names=list(class_names), seconds=seconds,
                      source_artifact_id=source_artifact_id, predictions=pred, **extra, **metrics)


def evaluate_clean(model, x: np.ndarray, y: np.ndarray, class_names: list[str],
                   scored: list[int] | None = None) -> EvalRecord:
    """Clean metrics of a model on images in memory (the evaluation job does this by shards)."""
    started = time.perf_counter()
    outcomes = clean_outcomes(model, x, y, np.arange(len(y)))
    return record_from_outcomes(CLEAN, outcomes, class_names, scored=scored, seconds=time.perf_counter() - started)


def evaluate_whitebox(model, x, y, class_names, attack, progress=None, scored: list[int] | None = None) -> EvalRecord:
    """Run ``attack`` against ``model`` itself and score the model on what it produced."""
    started = time.perf_counter()
    result = attack(model, x, y, progress=progress)
    return record_from_outcomes(WHITEBOX, whitebox_outcomes(result, np.arange(len(y))), class_names,
                                attack=result.attack, attack_key=attack.key, params=result.params, scored=scored,
                                seconds=time.perf_counter() - started)


@dataclass(frozen=True)
class ClassMapping:
    """How a dataset's classes map onto a model's, by canonical emotion name.

    ``to_model[d]`` is the model class of dataset class ``d``, or -1 when the model has no
    counterpart (its examples cannot be scored and are reported, not silently dropped).
    Model classes without a counterpart in the dataset stay predictable: predicting one is
    always an error, and how often it happens is reported.
    """

    to_model: np.ndarray
    dataset_classes: tuple[str, ...]
    model_classes: tuple[str, ...]

    @property
    def unmapped_dataset_classes(self) -> list[str]:
        return [c for c, m in zip(self.dataset_classes, self.to_model, strict=True) if m < 0]

    @property
    def scored_model_classes(self) -> list[int]:
        """Indices of the model classes some dataset class maps onto: the only true labels."""
        return sorted(set(self.to_model[self.to_model >= 0].tolist()))

    @property
    def unmapped_model_classes(self) -> list[str]:
        scored = self.scored_model_classes
        return [c for i, c in enumerate(self.model_classes) if i not in scored]

    def pairs(self) -> dict[str, str]:
        return {d: self.model_classes[m] for d, m in zip(self.dataset_classes, self.to_model, strict=True) if m >= 0}


def map_classes(model_classes, dataset_classes) -> ClassMapping:
    from ferqueue.data import canonical_emotion
    from ferqueue.errors import ConfigError

    def canon(name: str) -> str:
        return canonical_emotion(name) or name.lower()

    model_index = {}
    for i, name in enumerate(model_classes):
        model_index.setdefault(canon(name), i)
    to_model = np.array([model_index.get(canon(name), -1) for name in dataset_classes], dtype=np.int64)
    if not (to_model >= 0).any():
        raise ConfigError(f"no class of the dataset {list(dataset_classes)} maps onto the model's "
                          f"{list(model_classes)}")
    return ClassMapping(to_model, tuple(dataset_classes), tuple(model_classes))


def mapped_subset(mapping: ClassMapping, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Positions of the examples that can be scored, their labels in the model's classes, and
    what is left out or unreachable (for the record)."""
    model_labels = mapping.to_model[labels]
    keep = np.flatnonzero(model_labels >= 0)
    unmapped = {
        "mapping": mapping.pairs(),
        "dataset_classes_without_counterpart": {
            c: int(np.sum(labels == mapping.dataset_classes.index(c))) for c in mapping.unmapped_dataset_classes},
        "model_classes_without_counterpart": mapping.unmapped_model_classes,
        "examples_scored": int(len(keep)),
        "examples_left_out": int(len(labels) - len(keep)),
    }
    return keep, model_labels[keep], unmapped
