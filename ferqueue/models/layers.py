"""Custom layers. Importing this module registers them, so safe-mode loading finds them."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
import keras  # noqa: E402


@keras.saving.register_keras_serializable(package="ferqueue")
class ChannelFlip(keras.layers.Layer):
    """RGB <-> BGR, for backbones trained on caffe-style inputs (VGG19)."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)
