"""ART's side of the attack benchmark: its classifiers, FastGradientMethod and PixelAttack,
configured to match ferqueue's attacks. The only place in the project that imports ART.

ART 1.20's ``TensorFlowV2Classifier`` takes any callable model, so it wraps a Keras 3
model directly (ART's ``KerasClassifier`` is for tf.keras 2 models). Its ``predict`` runs
one compiled forward over the whole array it is given; its ``loss_gradient`` is eager.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

# ART's certification package warns on import when PyTorch is absent; nothing here needs it.
warnings.filterwarnings("ignore", message="PyTorch not found", category=UserWarning)
# ART's DE divides by its population's spread, which is zero once every member has the
# same fitness; harmless (its convergence test is disabled by atol=-1).
warnings.filterwarnings("ignore", message="divide by zero", category=RuntimeWarning, module="art")

FGSM_BATCH_SIZE = 32  # ART's default for FastGradientMethod
PIXEL_CONFIG = {
    "class": "art.attacks.evasion.PixelAttack",
    "th": 1,  # one pixel (L0 = 1)
    "es": 1,  # 1 = differential evolution; 0 would be CMA-ES
    "strategy": "DE/best/1/bin with recombination 1 (every gene from the mutant), F dithered in [0.5, 1)",
    "fitness": "probability of the true class",
    "popsize": "400 (ART: max(1, 400 // 5) = 80 per parameter x 5 parameters)",
    "init": "Latin hypercube over row, column in [0, H] and colours in [0, 255], truncated to integers",
    "early_stop": "after each generation, when the population's best member is misclassified",
    "value_range": "x in [0, 1] is scaled to [0, 255] inside ART and back by clip_values=(0, 1)",
}


def version() -> str:
    import art

    return art.__version__


def _classifier(model, num_classes: int, input_shape: tuple, loss=None):
    from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=model, nb_classes=num_classes, input_shape=input_shape, loss_object=loss, clip_values=(0.0, 1.0)
    )


class Fgsm:
    """ART's FastGradientMethod (L-inf) on the model's logits with the cross-entropy from
    logits: the gradient ferqueue's FGSM takes. On the softmax output a confidently
    classified image has a saturated, exactly zero gradient, and FGSM would not move it."""

    def __init__(self, model, logits_model, eps: float):
        import tensorflow as tf
        from art.attacks.evasion import FastGradientMethod

        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        shape = tuple(int(d) for d in model.input_shape[1:])
        classifier = _classifier(logits_model, int(model.output_shape[-1]), shape, loss)
        self.attack = FastGradientMethod(classifier, norm=np.inf, eps=eps, batch_size=FGSM_BATCH_SIZE)

    def generate(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.attack.generate(x=x, y=y)

    def timed_generate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        start = time.perf_counter()
        adv = self.generate(x, y)
        return time.perf_counter() - start, adv


class Pixel:
    """ART's PixelAttack(th=1, es=1, max_iter) on the softmax model (its fitness is the
    probability of the true class, as ferqueue's is), counting the images it predicts."""

    def __init__(self, model, max_iter: int):
        from art.attacks.evasion import PixelAttack

        shape = tuple(int(d) for d in model.input_shape[1:])
        self.classifier = _classifier(model, int(model.output_shape[-1]), shape)
        self.queries = 0
        predict = self.classifier.predict

        def counting_predict(x, *args, **kwargs):
            self.queries += len(x)
            return predict(x, *args, **kwargs)

        self.classifier.predict = counting_predict  # ART calls estimator.predict for every fitness
        self.attack = PixelAttack(
            self.classifier, th=1, es=1, max_iter=max_iter, targeted=False, verbose=False
        )
        self._warm = PixelAttack(self.classifier, th=1, es=1, max_iter=1, targeted=False, verbose=False)

    def warm_up(self, x: np.ndarray, y: np.ndarray) -> None:
        self._warm.generate(x=x, y=y)

    def timed_generate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, int]:
        """(seconds, adversarial images, predictions made) for ``x``."""
        self.queries = 0
        start = time.perf_counter()
        adv = self.attack.generate(x=x, y=y)
        return time.perf_counter() - start, adv.astype(np.float32), self.queries
