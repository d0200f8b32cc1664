"""Which way of keeping FGSM and PGD examples on disk: measured, side by side; prints JSON.

    .venv/bin/python ops/bench/store_filters.py [--images 2048] [--image-size 48]

A tiny_cnn is trained briefly on synthetic faces; FGSM (eps 0.01) and PGD (eps 0.01, 10 steps)
examples of the images are made against it. Each attack's examples are then written, chunked as
the store chunks them (64 examples), in every way considered:

- payloads: the float32 images themselves (``dense``), or the delta from the originals that
  ferqueue's encodings keep (``sign``: FGSM's signs as int8; ``xor``: the float32 bits XOR the
  original's, as uint32);
- HDF5 filters: none, gzip 1/4/9, byte-shuffle + gzip 1/4, lzf, shuffle + lzf and, when
  hdf5plugin is installed (the bench extra), Zstandard 3/9 and Blosc (zstd, byte-shuffle).

For each: bytes per example on disk, write and read seconds, and a bit-exact check of the images
rebuilt from what was read. ``ferqueue`` marks the way ferqueue.store uses (the delta with gzip 4,
chosen by this measurement; until 2026-12-08 it was byte-shuffle + gzip 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
CHUNK = 64  # examples per chunk, as ferqueue.store.hdf5 writes images
FERQUEUE_FILTER = "gzip4"  # what ferqueue.store.hdf5 uses for images (_IMAGE_FILTER), chosen here


def _filters() -> dict[str, dict]:
    filters = {
        "none": {},
        "gzip1": {"compression": "gzip", "compression_opts": 1},
        "gzip4": {"compression": "gzip", "compression_opts": 4},
        "gzip9": {"compression": "gzip", "compression_opts": 9},
        "shuffle+gzip1": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
        "shuffle+gzip4": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
        "lzf": {"compression": "lzf"},
        "shuffle+lzf": {"compression": "lzf", "shuffle": True},
    }
    try:
        import hdf5plugin
    except ImportError:
        return filters
    filters["zstd3"] = dict(hdf5plugin.Zstd(clevel=3))
    filters["zstd9"] = dict(hdf5plugin.Zstd(clevel=9))
    filters["blosc-zstd5-shuffle"] = dict(hdf5plugin.Blosc(cname="zstd", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    return filters


def _measure(payload: np.ndarray, rebuild, expected: np.ndarray, options: dict, folder: Path) -> dict:
    path = folder / "probe.h5"
    started = time.perf_counter()
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=payload, chunks=(min(CHUNK, len(payload)), *payload.shape[1:]), **options)
    written = time.perf_counter() - started
    size = path.stat().st_size
    started = time.perf_counter()
    with h5py.File(path, "r") as f:
        back = f["x"][:]
    read = time.perf_counter() - started
    exact = bool(np.array_equal(rebuild(back).view(np.uint32), expected.view(np.uint32)))
    path.unlink()
    n = len(payload)
    return {"bytes_per_example": round(size / n, 1), "write_seconds": round(written, 4),
            "read_seconds": round(read, 4), "read_mb_per_s_of_images": round(expected.nbytes / read / 1e6, 1),
            "bit_exact": exact}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--out", type=Path, default=REPO / "bench-out" / "store-filters.json")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    from ferqueue.attacks import parse_attack
    from ferqueue.data import load_dataset
    from ferqueue.models import build_model
    from ferqueue.store.encoding import SIGN, XOR, decode, encode
    from ferqueue.train import TrainConfig, train_model

    data = load_dataset(f"synthetic:{args.images}", args.image_size, cache_dir=None)
    x, y = data.take(np.arange(len(data)))
    model = build_model("tiny_cnn", len(data.class_names), args.image_size, weights="random", seed=0).model
    train_model(model, x, y, TrainConfig(epochs=3, batch_size=64, lr=3e-3, seed=0))
    dense_bytes = int(np.prod(x.shape[1:])) * 4
    report = {"benchmark": "store encodings and HDF5 filters for FGSM and PGD examples (ops/bench/store_filters.py)",
              "images": len(x), "image_size": args.image_size, "chunk_examples": CHUNK,
              "dense_float32_bytes_per_example": dense_bytes, "h5py": h5py.__version__,
              "hdf5": h5py.version.hdf5_version, "attacks": {}}
    filters = _filters()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for spec in ("fgsm:eps=0.01", "pgd:eps=0.01,steps=10"):
            attack = parse_attack(spec)
            x_adv = attack(model, x, y).x_adv
            encoding, stored, attrs = encode(x_adv, x, attack.name, attack.params)
            delta = {SIGN: "sign", XOR: "xor"}[encoding]
            payloads = {"dense": (x_adv, lambda back: back),
                        delta: (stored, lambda back, e=encoding, a=attrs: decode(e, back, x, a))}
            rows = []
            for payload_name, (payload, rebuild) in payloads.items():
                for filter_name, options in filters.items():
                    row = {"payload": payload_name, "filter": filter_name,
                           **_measure(payload, rebuild, x_adv, options, folder)}
                    row["times_smaller_than_dense_float32"] = round(dense_bytes / row["bytes_per_example"], 2)
                    row["ferqueue"] = payload_name == delta and filter_name == FERQUEUE_FILTER
                    row["ferqueue_until_2026_12_08"] = payload_name == delta and filter_name == "shuffle+gzip1"
                    rows.append(row)
                    print(f"{spec:24s} {payload_name:6s} {filter_name:20s} {row['bytes_per_example']:9.1f} B "
                          f"w {row['write_seconds']:.3f} s r {row['read_seconds']:.3f} s exact {row['bit_exact']}",
                          file=sys.stderr)
            exact = [r for r in rows if r["bit_exact"]]
            smallest = min(exact, key=lambda r: r["bytes_per_example"])
            ours = next(r for r in rows if r["ferqueue"])
            before = next(r for r in rows if r["ferqueue_until_2026_12_08"])
            report["attacks"][spec] = {
                "encoding": encoding, "rows": rows,
                "smallest": {k: smallest[k] for k in ("payload", "filter", "bytes_per_example")},
                "ferqueue": {k: ours[k] for k in ("payload", "filter", "bytes_per_example", "read_seconds")},
                "ferqueue_bytes_vs_smallest": round(ours["bytes_per_example"] / smallest["bytes_per_example"], 3),
                "ferqueue_bytes_vs_before": round(ours["bytes_per_example"] / before["bytes_per_example"], 3),
            }
    text = json.dumps(report, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
