"""Model zoo: the paper's MobileNetV2 fine-tune, the EDL ensemble and a tiny CNN for tests.

Every model maps images in [0, 1] (N, H, W, 3) to class probabilities. Its input
normalisation is its first layer, its pre-softmax scores come from a layer named
``logits`` (attacks differentiate those, not saturated probabilities) and its output
layer is a softmax named ``probs``.
"""

import warnings

# Keras warns when a loaded functional model is called with a bare tensor instead of a
# structure naming its input; calling it that way is correct and the warning is noise.
warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match the expected structure")

from ferqueue.models.artifacts import load_model, save_model  # noqa: E402
from ferqueue.models.zoo import (  # noqa: E402
    MODEL_NAMES,
    WITH_BACKBONE,
    BuiltModel,
    build_model,
    logits_model,
    set_backbone_trainable,
)

__all__ = [
    "MODEL_NAMES",
    "WITH_BACKBONE",
    "BuiltModel",
    "build_model",
    "load_model",
    "logits_model",
    "save_model",
    "set_backbone_trainable",
]
