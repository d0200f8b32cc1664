"""Training: standard, offline adversarial (original + stored examples) and online adversarial
(FGSM, FGSM-RS, N-FGSM, PGD-AT and TRADES, regenerated against the current weights every batch).

One loop serves every mode, so their costs are comparable: wall seconds, gradient
evaluations (one per example per forward+backward pass, whether the gradient is taken with
respect to the weights or the input) and examples seen by the weight updates.

Models with an ImageNet backbone are fine-tuned in two phases (linear probe, then fine-tune):
1. ``probe_epochs`` of the head alone on cached backbone features at ``lr``. This is cheap
   (one forward pass per image) and gives the head thousands of steps: a linear probe of
   MobileNetV2 features alone scores about 99% on CK+48, while a head trained for a few
   epochs on augmented images is still near 60% when the backbone is unfrozen.
2. ``epochs`` of the whole network at ``fine_tune_lr`` with augmentation (and, in online
   modes, adversarial examples regenerated every batch). Backbone BatchNorm layers keep
   their ImageNet statistics throughout (see ferqueue.models.set_backbone_trainable).
Models without a backbone (tiny_cnn) train ``epochs`` at ``lr``.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ferqueue.attacks.base import check_eps
from ferqueue.data.stream import ArrayExamples, Stream
from ferqueue.errors import ConfigError
from ferqueue.models import set_backbone_trainable
from ferqueue.models.zoo import backbones
from ferqueue.vocabulary import (
    N_FGSM,
    ONLINE_FGSM,
    ONLINE_FGSM_RS,
    ONLINE_MODES,
    PGD_AT,
    STANDARD,
    TRADES,
    TRAINING_MODES,
)

# the adversarial share of the loss when the configuration gives none: the clean and FGSM
# examples of a batch count alike (as ferqueue always trained), N-FGSM and PGD-AT train on their
# adversarial examples alone (as their papers do); TRADES weighs its terms with beta instead
DEFAULT_ADV_WEIGHT = {ONLINE_FGSM: 0.5, ONLINE_FGSM_RS: 0.5, N_FGSM: 1.0, PGD_AT: 1.0}
# a robust check whose accuracy falls below this share of the best one so far marks the epoch
# as catastrophic overfitting (FGSM-trained models that suddenly lose all PGD robustness)
OVERFIT_DROP = 0.5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    fine_tune_lr: float = 3e-5
    probe_epochs: int = 100
    augment: bool = True  # horizontal flips, plus shifts of up to ``shift`` of the image size
    shift: float = 0.0
    seed: int = 42
    mode: str = STANDARD
    adv_eps: float = 0.01  # online modes: the epsilon of the examples regenerated every batch
    label_smoothing: float = 0.0
    adv_steps: int = 10  # pgd_at and trades: PGD steps per batch, of 2.5 * adv_eps / adv_steps each
    trades_beta: float = 6.0  # trades: the weight of the KL term
    adv_weight: float | None = None  # online modes but trades: the adversarial share of the loss
    robust_check: int = 0  # held-out examples scored under PGD-10 at adv_eps after every epoch
    keep_best_robust: bool = False  # end with the weights of the epoch with the best robust check
    # a segment of a longer training (refresh_adv): it runs ``epochs`` epochs from epoch
    # ``epoch_offset`` of ``schedule_epochs``, so that the learning rate and the shuffles go on
    # where the previous segment stopped
    epoch_offset: int = 0
    schedule_epochs: int | None = None

    def __post_init__(self):
        if self.mode not in TRAINING_MODES:
            raise ConfigError(f"unknown training mode {self.mode!r}; choose one of {', '.join(TRAINING_MODES)}")
        if not 1 <= self.adv_steps <= 1000:
            raise ConfigError(f"adversarial steps must be between 1 and 1000, got {self.adv_steps}")
        if not 0 < self.trades_beta <= 1000:
            raise ConfigError(f"TRADES beta must be in (0, 1000], got {self.trades_beta}")
        if self.adv_weight is not None:
            if self.mode not in DEFAULT_ADV_WEIGHT:
                raise ConfigError(f"adversarial weight {self.adv_weight} applies to "
                                  f"{', '.join(DEFAULT_ADV_WEIGHT)}, not {self.mode}"
                                  + (" (TRADES weighs its terms with beta)" if self.mode == TRADES else ""))
            if not 0 < self.adv_weight <= 1:
                raise ConfigError(f"adversarial weight must be in (0, 1], got {self.adv_weight}")
        if self.robust_check < 0:
            raise ConfigError(f"robust check examples must not be negative, got {self.robust_check}")
        if self.keep_best_robust and not self.robust_check:
            raise ConfigError("keeping the best robust epoch needs a robust check (--robust-check N)")
        total = self.schedule_epochs if self.schedule_epochs is not None else self.epochs
        if self.epoch_offset < 0 or self.epoch_offset + self.epochs > total:
            raise ConfigError(f"a training segment of {self.epochs} epochs from epoch {self.epoch_offset} does not "
                              f"fit a schedule of {total}")
        if self.epochs < 0 or self.probe_epochs < 0:
            raise ConfigError(f"epochs must not be negative, got {self.epochs}/{self.probe_epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        for name in ("lr", "fine_tune_lr"):
            value = getattr(self, name)
            if value is not None and not (0 < value < 1):
                raise ConfigError(f"{name.replace('_', ' ')} {value} is outside (0, 1)")
        check_eps(self.adv_eps)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def mix(self) -> float | None:
        """The adversarial share of the loss of an online mode but TRADES; None otherwise."""
        if self.mode not in DEFAULT_ADV_WEIGHT:
            return None
        return DEFAULT_ADV_WEIGHT[self.mode] if self.adv_weight is None else self.adv_weight


@dataclass
class TrainResult:
    history: dict[str, list[float]]
    wall_seconds: float
    gradient_evals: int
    examples_seen: int
    epochs_run: int
    extra: dict = field(default_factory=dict)


Progress = Callable[[int, int, dict], None]  # (epoch, epochs, logs) after each epoch


def _augmenter(seed: int, shift: float):
    import keras

    # Flips and small shifts only: aligned face crops lose accuracy under heavier
    # augmentation (measured on CK+48), and interpolation would blur stored perturbations.
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if shift > 0:
        layers.append(keras.layers.RandomTranslation(shift, shift, fill_mode="nearest", seed=seed + 1))
    return keras.Sequential(layers, name="augment")


class _Steps:
    """Compiled train/eval steps for one model and one set of trainable variables."""

    def __init__(self, model, optimizer, config: TrainConfig, augment):
        import keras
        import tensorflow as tf

        from ferqueue.models.engine import compiled

        self.model = model
        fns = compiled(model)
        logits = fns.logits
        smoothing = config.label_smoothing
        num_classes = model.output_shape[-1]
        mode, eps, steps = config.mode, config.adv_eps, config.adv_steps
        pgd_step = 2.5 * eps / steps
        mix = config.mix
        variables = model.trainable_variables

        def loss_fn(y, scores):
            onehot = tf.one_hot(y, num_classes)
            return keras.losses.categorical_crossentropy(onehot, scores, from_logits=True,
                                                         label_smoothing=smoothing)

        def near(x, radius):
            return tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -radius, radius), 0.0, 1.0)

        def perturb(x, y):
            """The mode's adversarial examples against the current weights (the engine's
            signed-gradient step): FGSM; FGSM-RS, from a random start with a step of 1.25 eps
            ("fast is better than free"); N-FGSM, noise of 2 eps and a step of eps, not projected
            back (de Jorge et al.; a radius of 3 eps bounds nothing); PGD, K steps from a random start."""
            if mode == ONLINE_FGSM:
                x_adv, _ = fns.step_graph(x, x, y, eps, eps, 1.0)
            elif mode == ONLINE_FGSM_RS:
                x_adv, _ = fns.step_graph(near(x, eps), x, y, eps, 1.25 * eps, 1.0)
            elif mode == N_FGSM:
                x_adv, _ = fns.step_graph(near(x, 2 * eps), x, y, 3 * eps, eps, 1.0)
            else:
                x_adv = near(x, eps)
                for _ in tf.range(steps):
                    x_adv = fns.step_graph(x_adv, x, y, eps, pgd_step, 1.0)[0]
            return tf.stop_gradient(x_adv)

        def trades_adversary(x):
            """K signed-gradient steps of KL(p(x) || p(x')) from x plus a little noise."""
            p_clean = tf.stop_gradient(tf.nn.softmax(fns._logits_graph(x)))
            x_adv = tf.clip_by_value(x + 0.001 * tf.random.normal(tf.shape(x)), 0.0, 1.0)
            for _ in tf.range(steps):
                x_adv = fns.kl_step_graph(x_adv, x, p_clean, eps, pgd_step)
            return tf.stop_gradient(x_adv)

        def correct_of(scores, y):
            return tf.reduce_sum(tf.cast(tf.equal(tf.argmax(scores, -1, output_type=y.dtype), y), tf.float32))

        @tf.function(reduce_retracing=True)
        def train_step(x, y):
            if augment is not None:
                x = augment(x, training=True)
            n = tf.shape(y)[0]
            if mode == TRADES:
                x_adv = trades_adversary(x)
                with tf.GradientTape() as tape:
                    scores = logits(tf.concat([x, x_adv], axis=0), training=True)
                    clean, adv = scores[:n], scores[n:]
                    kl = tf.reduce_sum(tf.nn.softmax(clean) * (tf.nn.log_softmax(clean) - tf.nn.log_softmax(adv)), -1)
                    loss = tf.reduce_mean(loss_fn(y, clean)) + config.trades_beta * tf.reduce_mean(kl)
                y = tf.concat([y, y], axis=0)
            else:
                weights = None
                if mix == 1.0:
                    x = perturb(x, y)
                elif mix is not None:  # clean and adversarial halves, weighed (1 - mix) : mix
                    x = tf.concat([x, perturb(x, y)], axis=0)
                    y = tf.concat([y, y], axis=0)
                    weights = tf.concat([tf.fill([n], 2.0 * (1.0 - mix)), tf.fill([n], 2.0 * mix)], axis=0)
                with tf.GradientTape() as tape:
                    scores = logits(x, training=True)
                    per_example = loss_fn(y, scores)
                    loss = tf.reduce_mean(per_example if weights is None else per_example * weights)
            grads = tape.gradient(loss, variables)
            optimizer.apply(grads, variables)
            return loss * tf.cast(tf.shape(y)[0], tf.float32), correct_of(scores, y)

        @tf.function(reduce_retracing=True)
        def eval_step(x, y):
            scores = logits(x, training=False)
            loss = tf.reduce_sum(loss_fn(y, scores))
            return loss, correct_of(scores, y)

        self.train_step = train_step
        self.eval_step = eval_step
        # per input example: examples in the weight update, and input-gradient passes
        both = mode == TRADES or (mix is not None and mix < 1.0)
        self.updates_per_example = 2 if both else 1
        self.input_grads_per_example = (steps if mode in (PGD_AT, TRADES) else 1) if mode in ONLINE_MODES else 0


def _segment_schedule(schedule, offset: int):
    """``schedule`` read ``offset`` steps on (a segment that goes on from an earlier one)."""
    import keras

    class Segment(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return schedule(step + offset)

        def get_config(self):
            return {"offset": offset, "schedule": schedule.get_config()}

    return Segment() if offset else schedule


def _evaluate(steps: _Steps, val: Stream) -> tuple[float, float]:
    total_loss = total_correct = 0.0
    for x, y in val.ordered():
        loss, correct = steps.eval_step(x, y)
        total_loss += float(loss)
        total_correct += float(correct)
    return total_loss / max(len(val), 1), total_correct / max(len(val), 1)


def _held_out(val: Stream, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` examples of ``val``, in order: the robust check's fixed batch."""
    xs, ys, got = [], [], 0
    with contextlib.closing(val.ordered()) as batches:
        for x, y in batches:
            xs.append(np.array(x[: n - got], np.float32))
            ys.append(np.array(y[: n - got]))
            got += len(ys[-1])
            if got >= n:
                break
    return np.concatenate(xs), np.concatenate(ys)


def _robust_accuracy(model, held_out: tuple[np.ndarray, np.ndarray], config: TrainConfig) -> float:
    """Accuracy under white-box PGD-10 at ``adv_eps`` (random start seeded by the run's seed)."""
    from ferqueue.attacks import make_attack

    x, y = held_out
    result = make_attack("pgd", eps=config.adv_eps, steps=10, seed=config.seed)(model, x, y)
    return float(np.mean(result.adv_pred == y))


def _head_model(model):
    """The head alone (features -> logits), sharing the model's layers and weights."""
    import keras

    features = keras.Input(model.get_layer("head_dense").input.shape[1:])
    x = model.get_layer("head_dense")(features)
    x = model.get_layer("head_dropout")(x)
    return keras.Model(features, model.get_layer("logits")(x))


# features of more examples than this go to a file, memory-mapped, not to memory
_FEATURES_IN_MEMORY = 256 << 20


def _features(extractor, examples: Stream, folder: Path) -> ArrayExamples:
    """The backbone's features of every example, in order, with their labels."""
    from ferqueue.models.engine import forward

    width = int(np.prod(extractor.output_shape[1:]))
    n = len(examples)
    if n * width * 4 > _FEATURES_IN_MEMORY:
        features = np.lib.format.open_memmap(folder / f"features-{id(examples)}.npy", mode="w+", dtype=np.float32,
                                             shape=(n, width))
    else:
        features = np.empty((n, width), np.float32)
    labels = np.empty(n, np.int64)
    done = 0
    for x, y in examples.ordered():
        features[done:done + len(y)] = forward(extractor, x).reshape(len(y), width)
        labels[done:done + len(y)] = y
        done += len(y)
    return ArrayExamples(features, labels)


def _probe(model, train: Stream, val: Stream | None, config: TrainConfig, history) -> int:
    """Phase 1: fit the head on frozen backbone features. Returns the forward passes spent."""
    import keras
    import tensorflow as tf

    set_backbone_trainable(model, False)
    extractor = keras.Model(model.inputs, model.get_layer("head_dense").input)
    with tempfile.TemporaryDirectory(prefix="ferqueue-features-") as folder:
        f_train = _features(extractor, train, Path(folder))
        f_val = _features(extractor, val, Path(folder)) if val is not None else None
        head = _head_model(model)
        optimizer = keras.optimizers.Adam(config.lr)
        variables = head.trainable_variables
        num_classes = model.output_shape[-1]

        @tf.function(reduce_retracing=True)
        def step(f, y):
            with tf.GradientTape() as tape:
                scores = head(f, training=True)
                loss = tf.reduce_mean(keras.losses.categorical_crossentropy(
                    tf.one_hot(y, num_classes), scores, from_logits=True, label_smoothing=config.label_smoothing))
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        features = Stream([f_train], config.batch_size, seed=config.seed + 1)
        for epoch in range(config.probe_epochs):
            for f, y in features.epoch(epoch):
                step(f, y)
            history["probe_accuracy"].append(_accuracy(head, f_train, config.batch_size))
            history["probe_val_accuracy"].append(
                _accuracy(head, f_val, config.batch_size) if f_val is not None else float("nan"))
        return len(f_train) + (len(f_val) if f_val is not None else 0)


def _accuracy(head, features: ArrayExamples, batch_size: int) -> float:
    correct = 0
    for x, y in Stream([features], max(batch_size, 256), prefetch=0).ordered():
        correct += int(np.sum(head(x, training=False).numpy().argmax(1) == y))
    return correct / max(len(features), 1)


def train_model(
    model,
    x_train: np.ndarray,
    y_train: np.ndarray,
    config: TrainConfig,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Train ``model`` in place on arrays (small sets): ``train_stream`` over them."""
    if len(x_train) != len(y_train):
        raise ConfigError(f"{len(x_train)} training images but {len(y_train)} labels")
    train = Stream([ArrayExamples(x_train, y_train)], config.batch_size, config.seed)
    val = None
    if x_val is not None and len(x_val):
        val = Stream([ArrayExamples(x_val, y_val)], max(config.batch_size, 128), prefetch=0)
    return train_stream(model, train, config, val, progress)


def train_stream(model, train: Stream, config: TrainConfig, val: Stream | None = None,
                 progress: Progress | None = None) -> TrainResult:
    """Train ``model`` in place on the batches of ``train`` (for offline adversarial training:
    original and stored examples together); online modes regenerate FGSM examples on every
    batch. ``val`` is scored after every epoch."""
    import keras

    if len(train) == 0:
        raise ConfigError("the training set is empty")
    keras.utils.set_random_seed(config.seed)
    has_backbone = bool(backbones(model))
    history: dict[str, list[float]] = {k: [] for k in ("loss", "accuracy", "val_loss", "val_accuracy",
                                                       "seconds", "lr", "probe_accuracy", "probe_val_accuracy")}
    held_out = None
    if config.robust_check:
        if val is None or len(val) == 0:
            raise ConfigError("the robust check needs held-out examples, and there are none")
        held_out = _held_out(val, config.robust_check)
        history.update(val_pgd_accuracy=[], catastrophic_overfitting=[])
    best_robust: tuple[float, list | None, int] = (-1.0, None, 0)
    started = time.perf_counter()
    forward_evals = 0
    if has_backbone and config.probe_epochs:
        forward_evals = _probe(model, train, val, config, history)
    probe_seconds = time.perf_counter() - started

    set_backbone_trainable(model, has_backbone)
    lr = config.fine_tune_lr if has_backbone else config.lr
    n = len(train)
    batches_per_epoch = math.ceil(n / config.batch_size)
    # cosine decay to zero: the last epochs settle instead of leaving a noisy snapshot; a segment
    # of a longer training takes its part of the whole schedule
    total_epochs = config.schedule_epochs if config.schedule_epochs is not None else config.epochs
    cosine = keras.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, total_epochs * batches_per_epoch))
    schedule = _segment_schedule(cosine, config.epoch_offset * batches_per_epoch)
    augment = _augmenter(config.seed, config.shift) if config.augment else None
    steps = _Steps(model, keras.optimizers.Adam(schedule), config, augment)
    examples_seen = gradient_evals = 0
    for epoch in range(config.epochs):
        epoch_start = time.perf_counter()
        total_loss = total_correct = 0.0
        seen = 0
        for x, y in train.epoch(config.epoch_offset + epoch):
            loss, correct = steps.train_step(x, y)
            total_loss += float(loss)
            total_correct += float(correct)
            seen += len(y) * steps.updates_per_example
            gradient_evals += len(y) * (steps.updates_per_example + steps.input_grads_per_example)
        examples_seen += seen
        history["loss"].append(total_loss / seen)
        history["accuracy"].append(total_correct / seen)
        val_loss, val_acc = _evaluate(steps, val) if val is not None else (float("nan"), float("nan"))
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
        history["seconds"].append(time.perf_counter() - epoch_start)
        history["lr"].append(float(schedule((epoch + 1) * batches_per_epoch)))
        if held_out is not None:
            robust = _robust_accuracy(model, held_out, config)
            peak = max(history["val_pgd_accuracy"], default=0.0)
            history["val_pgd_accuracy"].append(robust)
            history["catastrophic_overfitting"].append(float(peak > 0 and robust < OVERFIT_DROP * peak))
            if config.keep_best_robust and robust > best_robust[0]:
                best_robust = (robust, model.get_weights(), epoch + 1)
        if progress is not None:
            progress(epoch + 1, config.epochs, {k: v[-1] for k, v in history.items() if v})
    extra = {}
    if held_out is not None:
        extra["robust_check"] = {"examples": len(held_out[1]), "attack": f"pgd:eps={config.adv_eps:g},steps=10",
                                 "gradient_evals": 10 * len(held_out[1]) * config.epochs}
    if best_robust[1] is not None:
        model.set_weights(best_robust[1])
        extra["kept_epoch"] = best_robust[2]
        extra["kept_val_accuracy"] = history["val_accuracy"][best_robust[2] - 1]
    set_backbone_trainable(model, False)
    if config.epochs == 0 and val is not None:
        val_loss, val_acc = _evaluate(steps, val)
        history["val_loss"].append(val_loss)
        history["val_accuracy"].append(val_acc)
    return TrainResult(
        history=history,
        wall_seconds=time.perf_counter() - started,
        gradient_evals=gradient_evals,
        examples_seen=examples_seen,
        epochs_run=config.epochs,
        extra={"probe_seconds": probe_seconds, "probe_forward_evals": forward_evals,
               "max_stream_bytes": train.max_held_bytes, **extra},
    )
