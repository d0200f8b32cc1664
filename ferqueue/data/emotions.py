"""Emotion vocabulary shared by every dataset, and the fixed label tables of CK+ and FER2013."""

from __future__ import annotations

EMOTIONS = ("anger", "contempt", "disgust", "fear", "happy", "neutral", "sadness", "surprise")

_ALIASES = {
    "anger": ("anger", "angry", "mad"),
    "contempt": ("contempt", "contemptuous"),
    "disgust": ("disgust", "disgusted", "disgusting"),
    "fear": ("fear", "fearful", "scared", "afraid"),
    "happy": ("happy", "happiness", "joy", "joyful"),
    "neutral": ("neutral",),
    "sadness": ("sadness", "sad", "unhappy"),
    "surprise": ("surprise", "surprised"),
}
_CANONICAL = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}

# CK+48 class folders; the synthetic faces use the same names.
CK_CLASSES = ("anger", "contempt", "disgust", "fear", "happy", "sadness", "surprise")
# FER2013 CSV emotion codes 0..6, named as the Kaggle image folders name them.
FER2013_CODES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER2013_CLASSES = tuple(sorted(FER2013_CODES))


def canonical_emotion(name: str) -> str | None:
    """The canonical name for an emotion label or alias (case-insensitive), or None if unknown."""
    return _CANONICAL.get(name.strip().lower())


def known_emotion_names() -> str:
    """For error messages: the canonical names and the aliases accepted for them."""
    return ", ".join(f"{name} ({'/'.join(aliases)})" for name, aliases in _ALIASES.items())
