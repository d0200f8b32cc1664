"""Datasets: CK+48 and FER2013 loaders, the paper's preprocessing, synthetic faces and splits.

Every dataset is preprocessed to float32 RGB in [0, 1] at one image size, carries a
fingerprint of its manifest (ids, labels, subjects, subsets, file contents), and can be
cached on disk by that fingerprint.
"""

from ferqueue.data.dataset import Dataset
from ferqueue.data.emotions import EMOTIONS, canonical_emotion
from ferqueue.data.loaders import load_dataset
from ferqueue.data.splits import SPLIT_KINDS, Split, make_split

__all__ = [
    "EMOTIONS",
    "SPLIT_KINDS",
    "Dataset",
    "Split",
    "canonical_emotion",
    "load_dataset",
    "make_split",
]
