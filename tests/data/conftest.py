"""Small CK+ and FER2013 folders written with PIL into tmp_path."""

from __future__ import annotations

from pathlib import Path

import pytest

from .factories import FER_CODES, write_image


@pytest.fixture
def ck_folder(tmp_path: Path) -> Path:
    """CK+48 layout: anger 3 (subjects S005, S005, S010), happy 2, surprise 4, all PNG."""
    root = tmp_path / "ckmini"
    files = {
        "surprise": [
            "S010_002_00000011.png",
            "S005_001_00000009.png",
            "S022_003_00000020.png",
            "S022_003_00000021.png",
        ],
        "anger": ["S010_004_00000017.png", "S005_001_00000010.png", "S005_001_00000011.png"],
        "happy": ["S022_005_00000001.png", "S010_006_00000015.png"],
    }
    seed = 0
    for emotion, names in files.items():
        for name in names:
            write_image(root / emotion / name, seed)
            seed += 1
    return root


@pytest.fixture
def fer_folder(tmp_path: Path) -> Path:
    """FER2013 image-folder layout: all seven classes in train and test, three in validation."""
    root = tmp_path / "fermini"
    seed = 100
    for subset, per_class in (("train", 3), ("validation", 1), ("test", 2)):
        classes = ("angry", "happy", "sad") if subset == "validation" else FER_CODES
        for emotion in classes:
            for k in range(per_class):
                write_image(root / subset / emotion / f"{subset}_{k}.jpg", seed)
                seed += 1
    return root
