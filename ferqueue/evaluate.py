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
    x_adv: np.ndarray | None = field(default=None, repr=False)

    def columns(self) -> dict:
        """The values that go into an ``evaluations`` row."""
        return {k: v for k, v in self.__dict__.items() if k not in ("predictions", "x_adv")}


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str],
                           scored: list[int] | None = None) -> dict:
    """sklearn metrics over the model's classes. ``scored``: the classes that can occur as true
    labels (cross-dataset: the mapped ones); macro averages run over those only, so a model
    class the dataset lacks does not count as a class scored zero. Predicting it is still an error."""
    labels = list(range(len(class_names)))
    macro_labels = labels if scored is None else sorted(scored)
    pred = probs.argmax(axis=1)
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
        "mean_confidence": float(probs.max(axis=1).mean()) if len(probs) else 0.0,
        "confusion": confusion_matrix(y_true, pred, labels=labels).tolist(),
        "report": report,
    }


def evaluate_clean(model, x: np.ndarray, y: np.ndarray, class_names: list[str],
                   scored: list[int] | None = None) -> EvalRecord:
    started = time.perf_counter()
    probs = _probabilities(model, x)
    metrics = classification_metrics(y, probs, class_names, scored)
    return EvalRecord(
        setting=CLEAN, attack="none", attack_key="none", attack_params=None, epsilon=None,
        class_names=list(class_names), seconds=time.perf_counter() - started,
        predictions=probs.argmax(1), **metrics,
    )


def evaluate_whitebox(model, x, y, class_names, attack, progress=None, keep_images: bool = False,
                      scored: list[int] | None = None) -> EvalRecord:
    """Run ``attack`` against ``model`` itself and score the model on what it produced."""
    started = time.perf_counter()
    result = attack(model, x, y, progress=progress)
    probs = _probabilities(model, result.x_adv)
    metrics = classification_metrics(y, probs, class_names, scored)
    summary = result.summary()
    return EvalRecord(
        setting=WHITEBOX, attack=result.attack, attack_key=attack.key, attack_params=result.params,
        epsilon=result.params.get("eps"), class_names=list(class_names),
        seconds=time.perf_counter() - started, success_rate=summary["success_rate"],
        mean_queries=summary["mean_queries"], mean_linf=summary["mean_linf"], mean_l0=summary["mean_l0"],
        predictions=probs.argmax(1), x_adv=result.x_adv if keep_images else None, **metrics,
    )


def evaluate_transfer(model, x_adv, y, class_names, attack: str, attack_key: str, attack_params: dict,
                      linf=None, l0=None, source_artifact_id: int | None = None) -> EvalRecord:
    """Score ``model`` on stored adversarial images that were made against another model."""
    started = time.perf_counter()
    probs = _probabilities(model, x_adv)
    metrics = classification_metrics(y, probs, class_names)
    pred = probs.argmax(1)
    return EvalRecord(
        setting=TRANSFER, attack=attack, attack_key=attack_key, attack_params=attack_params,
        epsilon=attack_params.get("eps"), class_names=list(class_names),
        seconds=time.perf_counter() - started,
        mean_linf=float(np.mean(linf)) if linf is not None and len(linf) else None,
        mean_l0=float(np.mean(l0)) if l0 is not None and len(l0) else None,
        source_artifact_id=source_artifact_id, predictions=pred, **metrics,
    )


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
