"""Model builders. Plain functions with explicit arguments, as keras.applications does."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ferqueue.errors import ConfigError

MODEL_NAMES = ("mobilenetv2", "edl", "tiny_cnn")
# models whose backbone comes pretrained (ImageNet): a head-only probe trains them
WITH_BACKBONE = ("mobilenetv2", "edl")
BACKBONE_PREFIX = "backbone_"  # layers whose weights come from ImageNet


@dataclass(frozen=True)
class BuiltModel:
    model: object  # keras.Model
    name: str
    weights: str  # "imagenet", "random" or "partial-imagenet"
    num_params: int


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def _keras_home() -> Path:
    """The folder Keras itself reads weights from (fixed when Keras is imported)."""
    from keras.src.backend.config import keras_home  # no public alias in Keras 3

    _keras()
    return Path(keras_home()).expanduser()


def _imagenet_available(filename: str) -> bool:
    return (_keras_home() / "models" / filename).exists()


_WEIGHT_FILES = {
    "mobilenetv2": "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
    "densenet121": "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
    "vgg19": "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
}


def _resolve_weights(backbone: str, weights: str | None) -> str | None:
    """'auto' asks for ImageNet weights the standard Keras way when the file is present
    offline, otherwise warns and falls back to random initialisation."""
    if weights in (None, "none", "random"):
        return None
    if weights == "imagenet":
        return "imagenet"
    if weights != "auto":
        raise ConfigError(f"unknown weights {weights!r}: use 'auto', 'imagenet' or 'random'")
    if _imagenet_available(_WEIGHT_FILES[backbone]):
        return "imagenet"
    warnings.warn(
        f"ImageNet weights for {backbone} not found at {_keras_home() / 'models' / _WEIGHT_FILES[backbone]} "
        "(set KERAS_HOME to a folder holding models/<file>); using random initialisation",
        stacklevel=3,
    )
    return None


def _head(keras, features, num_classes: int, dropout: float):
    """The paper's head: GAP -> Dense 128 ReLU -> Dropout -> Dense classes -> softmax."""
    x = keras.layers.Dense(128, activation="relu", name="head_dense")(features)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    logits = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="probs")(logits)


def _mobilenetv2(keras, image_size, num_classes, weights, dropout):
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="normalise")(inputs)  # [0,1] -> [-1,1]
    w = _resolve_weights("mobilenetv2", weights)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input_shape.*undefined or non-square.*")
        base = keras.applications.MobileNetV2(
            input_shape=(image_size, image_size, 3), include_top=False, weights=w
        )
    base.name = BACKBONE_PREFIX + "mobilenetv2"
    x = base(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, _head(keras, x, num_classes, dropout), name="mobilenetv2")
    return model, "imagenet" if w else "random"


def _edl(keras, image_size, num_classes, weights, dropout):
    """DenseNet121 + MobileNetV2 + VGG19 on one input, GAP features concatenated."""
    inputs = keras.Input((image_size, image_size, 3))
    pixels = keras.layers.Rescaling(255.0, name="to_255")(inputs)
    branches = []
    got = []
    specs = [
        ("densenet121", keras.applications.DenseNet121),
        ("mobilenetv2", keras.applications.MobileNetV2),
        ("vgg19", keras.applications.VGG19),
    ]
    for name, ctor in specs:
        w = _resolve_weights(name, weights)
        got.append(w)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*input_shape.*undefined or non-square.*")
            base = ctor(input_shape=(image_size, image_size, 3), include_top=False, weights=w)
        base.name = BACKBONE_PREFIX + name
        x = _branch_normaliser(keras, name)(pixels)
        x = base(x)
        branches.append(keras.layers.GlobalAveragePooling2D(name=f"gap_{name}")(x))
    features = keras.layers.Concatenate(name="concat")(branches)
    model = keras.Model(inputs, _head(keras, features, num_classes, dropout), name="edl")
    label = "imagenet" if all(got) else ("random" if not any(got) else "partial-imagenet")
    return model, label


def _branch_normaliser(keras, name: str):
    """Each backbone's own ImageNet preprocessing, as a layer with no weights (serialisable)."""
    if name == "mobilenetv2":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name=f"norm_{name}")
    if name == "densenet121":  # torch mode: /255, then per-channel mean/std
        mean = [0.485 * 255, 0.456 * 255, 0.406 * 255]
        var = [(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2]
        return keras.layers.Normalization(mean=mean, variance=var, name=f"norm_{name}")
    # vgg19, caffe mode: RGB -> BGR, then subtract the ImageNet mean (unit variance).
    from ferqueue.models.layers import ChannelFlip

    return keras.Sequential(
        [
            ChannelFlip(name=f"bgr_{name}"),
            keras.layers.Normalization(mean=[103.939, 116.779, 123.68], variance=[1.0, 1.0, 1.0]),
        ],
        name=f"norm_{name}",
    )


def _tiny_cnn(keras, image_size, num_classes, weights, dropout):
    if weights not in (None, "none", "random", "auto"):
        raise ConfigError("tiny_cnn has no pretrained weights; use --weights random")
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="normalise")(inputs)
    for i, filters in enumerate((16, 32)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{i}")(x)
    x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, _head(keras, x, num_classes, dropout), name="tiny_cnn")
    return model, "random"


_BUILDERS = {"mobilenetv2": _mobilenetv2, "edl": _edl, "tiny_cnn": _tiny_cnn}
_MIN_SIZE = {"mobilenetv2": 32, "edl": 32, "tiny_cnn": 8}


def build_model(
    name: str,
    num_classes: int,
    image_size: int = 75,
    weights: str | None = "auto",
    dropout: float = 0.5,
    seed: int | None = None,
) -> BuiltModel:
    """Build a fresh model by name. ``weights``: 'auto', 'imagenet' or 'random'."""
    if name not in _BUILDERS:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    if image_size < _MIN_SIZE[name]:
        raise ConfigError(f"image size {image_size} is too small for {name} (min {_MIN_SIZE[name]})")
    keras = _keras()
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model, label = _BUILDERS[name](keras, image_size, num_classes, weights, dropout)
    set_backbone_trainable(model, False)
    return BuiltModel(model=model, name=name, weights=label, num_params=int(model.count_params()))


def logits_model(model):
    """A view of ``model`` that outputs its pre-softmax scores (shares the weights)."""
    keras = _keras()
    return keras.Model(model.inputs, model.get_layer("logits").output, name=f"{model.name}_logits")


def backbones(model) -> list:
    return [layer for layer in model.layers if layer.name.startswith(BACKBONE_PREFIX)]


def set_backbone_trainable(model, trainable: bool) -> None:
    """Freeze or unfreeze the ImageNet backbones (the head always trains).

    Backbone BatchNorm layers stay frozen either way: in Keras 3 a non-trainable BatchNorm
    runs in inference mode, so fine-tuning keeps the ImageNet statistics. Letting batch
    statistics of 32 face crops replace them is what makes a naive fine-tune score far
    lower in evaluation than in training.
    """
    keras = _keras()
    for backbone in backbones(model):
        backbone.trainable = trainable
        for layer in backbone._flatten_layers(include_self=False):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False
