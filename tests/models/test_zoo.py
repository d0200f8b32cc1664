"""The model zoo: parameter counts, normalisation inside the model, safe artifacts, frozen BN."""

import os

import numpy as np
import pytest
from fq_helpers import SHARED

from ferqueue.errors import ConfigError, StoreError
from ferqueue.models import build_model, load_model, logits_model, save_model, set_backbone_trainable


def test_mobilenetv2_has_the_papers_2422855_parameters():
    built = build_model("mobilenetv2", 7, 75, weights="random")
    assert built.num_params == 2_422_855
    assert built.model.layers[1].name == "normalise", "input normalisation is the first layer"
    assert built.model.output_shape == (None, 7)


def test_edl_concatenates_three_backbones():
    built = build_model("edl", 7, 75, weights="random")
    names = {layer.name for layer in built.model.layers}
    assert {"backbone_densenet121", "backbone_mobilenetv2", "backbone_vgg19", "concat"} <= names
    # 7,037,504 + 2,257,984 + 20,024,384 backbone weights, then (1024+1280+512) -> 128 -> 7
    assert built.num_params == 29_681_351


@pytest.mark.skipif(not (SHARED / "keras" / "models").is_dir(), reason="no ImageNet weights in ../shared/keras")
def test_auto_weights_use_imagenet_when_present_and_warn_otherwise(tmp_path):
    import subprocess
    import sys

    code = "from ferqueue.models import build_model; print(build_model('mobilenetv2', 7, 75, 'auto').weights)"
    env = {**os.environ, "KERAS_HOME": str(SHARED / "keras")}
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "imagenet"
    env["KERAS_HOME"] = str(tmp_path)  # Keras fixes its folder at import: a fresh process
    missing = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert missing.stdout.strip() == "random"
    assert "ImageNet weights for mobilenetv2 not found" in missing.stderr and str(tmp_path) in missing.stderr


def test_unknown_model_and_bad_sizes_are_refused():
    with pytest.raises(ConfigError, match="resnet"):
        build_model("resnet", 7)
    with pytest.raises(ConfigError, match="too small"):
        build_model("mobilenetv2", 7, 16, weights="random")
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("tiny_cnn", 1, 32)


def test_save_load_round_trip_and_tamper_check(tmp_path):
    model = build_model("mobilenetv2", 7, 40, weights="random", seed=1).model
    path, sha = save_model(model, tmp_path, "m")
    assert path.name.startswith("m-") and path.suffix == ".keras" and not list(tmp_path.glob(".m-*"))
    loaded = load_model(path, sha)
    x = np.random.default_rng(0).random((3, 40, 40, 3), dtype=np.float32)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-6)
    logits = np.asarray(logits_model(loaded)(x), np.float64)
    softmax = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(softmax / softmax.sum(1, keepdims=True), np.asarray(loaded(x)), atol=1e-6)
    with open(path, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(StoreError, match="sha256"):
        load_model(path, sha)
    with pytest.raises(StoreError, match="does not exist"):
        load_model(tmp_path / "missing.keras")


def test_edl_round_trips_with_its_custom_layer(tmp_path):
    model = build_model("edl", 3, 32, weights="random", seed=0).model
    path, sha = save_model(model, tmp_path, "edl")
    x = np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32)
    np.testing.assert_allclose(load_model(path, sha)(x), model(x), atol=1e-5)


def test_backbone_batchnorm_keeps_imagenet_statistics_while_training():
    """A training-mode call must not replace BN statistics, frozen or unfrozen, nor after reload."""
    import keras

    model = build_model("mobilenetv2", 7, 48, weights="random", seed=0).model
    bns = [layer for layer in model.get_layer("backbone_mobilenetv2").layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(bn.moving_mean) for bn in bns]
    x = np.random.default_rng(0).random((8, 48, 48, 3), dtype=np.float32)
    set_backbone_trainable(model, True)
    assert len(model.trainable_weights) > 4, "unfrozen convolutions train"
    model(x, training=True)
    assert all(np.array_equal(b, np.array(bn.moving_mean)) for b, bn in zip(before, bns, strict=True))
    assert not any(bn.trainable for bn in bns)
    set_backbone_trainable(model, False)
    assert len(model.trainable_weights) == 4, "only the head's two dense layers train when frozen"
