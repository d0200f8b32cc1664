"""The model engine: a model's compiled functions, traced once per model and shared by the
attacks, evaluation and training.

- ``forward``: the model's own outputs (probabilities of a classifier, features of an extractor);
- ``predict``: class probabilities, softmax of the logits;
- ``step``: one signed-gradient step on the cross-entropy, projected onto the L-inf ball and
  [0, 1] (FGSM is one step, PGD several, online adversarial training one per batch);
- ``pixel_logits``: logits of candidates that each change a few pixels (one-pixel attacks).

Gradients are taken on the model's pre-softmax ``logits`` (through ``logits_model``): the
softmax saturates, and a saturated softmax has (near) zero input gradients.
"""

from __future__ import annotations

import os
import weakref
from functools import cached_property

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import tensorflow as tf  # noqa: E402

from ferqueue.arrays import batches  # noqa: E402
from ferqueue.models.zoo import logits_model  # noqa: E402

# Keyed weakly on the Keras model, so a discarded model releases its traced graphs.
_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

# Images per pass on a CPU, for gradients and forwards alike. On MobileNetV2 at 75x75 on
# 2 cores, batches of 16-32 run fastest; forward passes of 128 run about 40% slower and of
# 512 about 70% slower, as activations no longer stay in cache (see ops/bench/attacks).
CPU_BATCH_SIZE = 32
FORWARD_BATCH_SIZE = 256  # forward passes that keep no activations (evaluation, features)


def accelerators() -> list:
    """The GPUs TensorFlow sees (logical devices); empty on a CPU-only machine."""
    return tf.config.list_logical_devices("GPU")


def devices() -> list[dict]:
    """Every device TensorFlow sees: name, type and, for a GPU, its model and compute capability."""
    out = []
    for device in tf.config.list_physical_devices():
        facts = {"name": device.name.removeprefix("/physical_device:"), "type": device.device_type}
        if device.device_type == "GPU":
            details = tf.config.experimental.get_device_details(device)
            facts["model"] = details.get("device_name")
            facts["compute_capability"] = details.get("compute_capability")
        out.append(facts)
    return out


def batch_size(accelerator_batch_size: int, on_accelerator: bool) -> int:
    """Images per pass: an attack's own (large) batch on an accelerator, CPU_BATCH_SIZE on a CPU."""
    return accelerator_batch_size if on_accelerator else CPU_BATCH_SIZE


def compiled(model) -> ModelFunctions:
    """The compiled functions of ``model``, built on first use."""
    fns = _CACHE.get(model)
    if fns is None:
        fns = _CACHE[model] = ModelFunctions(model)
    return fns


def forward(model, x: np.ndarray, batch_size: int = FORWARD_BATCH_SIZE) -> np.ndarray:
    """The model's outputs in eval mode, batched through one compiled function per model."""
    return compiled(model).forward(x, batch_size)


class ModelFunctions:
    """A model's tf.functions. Input signatures leave only the batch dimension free, so a last
    short batch or a changing number of candidates never retraces. The classifier functions
    (everything but ``forward``) are built on first use: a feature extractor has no logits."""

    def __init__(self, model):
        self.model = model
        self.on_accelerator = bool(accelerators())
        self.image_shape = tuple(int(d) for d in model.input_shape[1:])
        self._images = tf.TensorSpec((None, *self.image_shape), tf.float32)
        self._forward = tf.function(lambda batch: model(batch, training=False), input_signature=[self._images])

    # -- any model ---------------------------------------------------------------------------

    def forward(self, x: np.ndarray, batch_size: int = FORWARD_BATCH_SIZE) -> np.ndarray:
        out = [self._forward(np.asarray(x[part], np.float32)).numpy() for part in batches(len(x), batch_size)]
        if out:
            return np.concatenate(out)
        return np.zeros((0, *self.model.output_shape[1:]), np.float32)

    # -- classifiers -------------------------------------------------------------------------

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])

    @cached_property
    def logits(self):
        """The model's pre-softmax view (shares its weights)."""
        return logits_model(self.model)

    @cached_property
    def _probs(self):
        return tf.function(lambda x: tf.nn.softmax(self._logits_graph(x)), input_signature=[self._images])

    @cached_property
    def _step(self):
        scalar = tf.TensorSpec((), tf.float32)
        return tf.function(self.step_graph, input_signature=[
            self._images, self._images, tf.TensorSpec((None,), tf.int64), scalar, scalar, scalar])

    @cached_property
    def _pixel_logits(self):
        return tf.function(self._pixel_logits_graph, input_signature=[
            self._images, tf.TensorSpec((None,), tf.int32), tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None, 3), tf.float32)])

    def default_batch_size(self, accelerator_batch_size: int) -> int:
        """The attack's own batch size on an accelerator, CPU_BATCH_SIZE on a CPU."""
        return batch_size(accelerator_batch_size, self.on_accelerator)

    def predict(self, x: np.ndarray, batch_size: int) -> np.ndarray:
        """Class probabilities of ``x``, batched."""
        out = np.empty((len(x), self.num_classes), np.float32)
        for part in batches(len(x), batch_size):
            out[part] = self._probs(x[part]).numpy()
        return out

    def hold(self, x: np.ndarray):
        """``x`` as a tensor, to be passed to many calls without converting it each time."""
        return tf.constant(x, tf.float32)

    def step(self, x, x0, labels: np.ndarray, eps: float, alpha: float, direction: float):
        """One signed-gradient step of size ``alpha`` on the cross-entropy of ``labels``
        (``direction`` +1 ascends it, -1 descends it), projected onto the L-inf ``eps`` ball
        around ``x0`` and onto [0, 1]. Returns (new x, probabilities at the old x) as tensors."""
        return self._step(x, x0, labels, eps, alpha, direction)

    def pixel_logits(self, images, owner: np.ndarray, pos: np.ndarray, colours: np.ndarray) -> np.ndarray:
        """Logits of candidates: candidate i is ``images[owner[i]]`` with its pixels at flat
        positions ``pos[i]`` (distinct) set to ``colours[i]``."""
        return self._pixel_logits(images, owner, pos, colours).numpy()

    # -- graphs (also traced inside other tf.functions, e.g. a training step) ------------------

    def _logits_graph(self, x):
        return tf.cast(self.logits(x, training=False), tf.float32)

    def step_graph(self, x, x0, labels, eps, alpha, direction):
        """The graph of ``step``, to call inside a tf.function of one's own."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = self._logits_graph(x)
            # summed, not averaged: only the sign is used and a mean can underflow
            loss = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
        moved = x + direction * alpha * tf.sign(tape.gradient(loss, x))
        projected = tf.clip_by_value(moved, x0 - eps, x0 + eps)
        return tf.clip_by_value(projected, 0.0, 1.0), tf.nn.softmax(logits)

    def kl_step_graph(self, x, x0, p_clean, eps, alpha):
        """TRADES's inner step: a signed-gradient ascent of KL(p_clean || p(x)), projected onto
        the L-inf ``eps`` ball around ``x0`` and onto [0, 1]."""
        with tf.GradientTape() as tape:
            tape.watch(x)
            log_p = tf.nn.log_softmax(self._logits_graph(x))
            # summed over the batch: only the sign of the gradient is used
            loss = tf.reduce_sum(p_clean * (tf.math.log(p_clean + 1e-12) - log_p))
        moved = x + alpha * tf.sign(tape.gradient(loss, x))
        return tf.clip_by_value(tf.clip_by_value(moved, x0 - eps, x0 + eps), 0.0, 1.0)

    def _pixel_logits_graph(self, images, owner, pos, colours):
        h, w, c = self.image_shape
        m, k = tf.shape(pos)[0], tf.shape(pos)[1]
        flat = tf.reshape(tf.gather(images, owner), (m, h * w, c))
        where = tf.stack([tf.repeat(tf.range(m), k), tf.reshape(pos, (-1,))], axis=1)
        flat = tf.tensor_scatter_nd_update(flat, where, tf.reshape(colours, (-1, c)))
        return self._logits_graph(tf.reshape(flat, (m, h, w, c)))
