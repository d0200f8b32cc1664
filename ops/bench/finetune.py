"""Fine-tuning MobileNetV2 on CK+48: a naive Keras fit against ferqueue's training, side by side.

naive:     model.fit at lr 1e-3 (Adam, batch 32) with BatchNorm layers trainable, as a
           straightforward Keras fine-tune does; training accuracy comes from batch statistics,
           test accuracy is measured in evaluation mode.
probe:     a linear probe (logistic regression) on frozen ImageNet features.
ferqueue:  ferqueue.train.train_model with its defaults (probe, then fine-tune with frozen
           BatchNorm statistics and cosine-decayed lr).

Usage: KERAS_HOME=../shared/keras python ops/bench/finetune.py [--dataset PATH] [--epochs 10]
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # paths in the JSON are relative to the project

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default=str(Path(__file__).resolve().parents[3] / "shared/datasets/ck48"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from ferqueue.data import load_dataset, make_split
    from ferqueue.models import build_model
    from ferqueue.models.engine import forward
    from ferqueue.train import TrainConfig, train_model

    data = load_dataset(args.dataset, 75)
    split = make_split(data, "random", seed=args.seed)
    x, y = data.take(split.train)
    xt, yt = data.take(split.test)
    out = {"dataset": os.path.relpath(data.source, REPO_ROOT), "n_train": len(x), "n_test": len(xt), "epochs": args.epochs,
           "load_average": os.getloadavg()}

    def accuracy(model) -> float:
        return float(np.mean(forward(model, xt).argmax(1) == yt))

    # naive: every layer trainable, BatchNorm in training mode during fit
    built = build_model("mobilenetv2", 7, 75, weights="imagenet", seed=args.seed)
    model = built.model
    for layer in model.get_layer("backbone_mobilenetv2")._flatten_layers(include_self=True):
        layer.trainable = True
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    started = time.perf_counter()
    history = model.fit(x, y, batch_size=32, epochs=args.epochs, verbose=0, shuffle=True)
    out["naive"] = {"seconds": time.perf_counter() - started,
                    "train_accuracy_batch_stats": float(history.history["accuracy"][-1]),
                    "test_accuracy_eval_mode": accuracy(model)}

    # linear probe on frozen features
    base = build_model("mobilenetv2", 7, 75, weights="imagenet").model
    extractor = keras.Model(base.inputs, base.get_layer("gap").output)
    started = time.perf_counter()
    probe = LogisticRegression(max_iter=3000).fit(forward(extractor, x), y)
    out["linear_probe"] = {"seconds": time.perf_counter() - started,
                           "test_accuracy": float(probe.score(forward(extractor, xt), yt))}

    # ferqueue's training
    built = build_model("mobilenetv2", 7, 75, weights="imagenet", seed=args.seed)
    result = train_model(built.model, x, y, TrainConfig(epochs=args.epochs, seed=args.seed), xt, yt)
    out["ferqueue"] = {"seconds": result.wall_seconds, "train_accuracy": result.history["accuracy"][-1],
                       "probe_val_accuracy": result.history["probe_val_accuracy"][-1],
                       "test_accuracy_eval_mode": accuracy(built.model)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
