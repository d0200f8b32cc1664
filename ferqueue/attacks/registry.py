"""Attacks by name: ``make_attack("pgd", eps=0.03)`` and ``parse_attack("pgd:eps=0.03,steps=10")``."""

from __future__ import annotations

import inspect
import re

from ferqueue.attacks.base import Attack
from ferqueue.attacks.gradient import FGSM, PGD
from ferqueue.attacks.pixel import PixelAttack
from ferqueue.errors import ConfigError

_CLASSES: dict[str, type[Attack]] = {cls.name: cls for cls in (FGSM, PGD, PixelAttack)}
ATTACK_NAMES = tuple(_CLASSES)
_INT = re.compile(r"^[+-]?\d+$")


def attack_classes() -> tuple[type[Attack], ...]:
    """Every attack, by its class."""
    return tuple(_CLASSES.values())


def make_attack(name: str, **params) -> Attack:
    """Configure attack ``name``; ConfigError for an unknown name or parameter or a bad value."""
    cls = _CLASSES.get(name)
    if cls is None:
        raise ConfigError(f"unknown attack {name!r}; choose one of {', '.join(ATTACK_NAMES)}")
    accepted = inspect.signature(cls.__init__).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        known = ", ".join(p for p in accepted if p != "self")
        raise ConfigError(f"unknown parameter {', '.join(unknown)} for attack {name!r}; it takes {known}")
    missing = [
        p.name
        for p in accepted.values()
        if p.default is p.empty and p.name != "self" and p.name not in params
    ]
    if missing:
        raise ConfigError(f"attack {name!r} needs {', '.join(missing)}")
    return cls(**params)


def parse_attack(spec: str) -> Attack:
    """Build an attack from ``name[:param=value,...]``, e.g. ``"pixel:k=1,method=de"``.

    Values read as true/false, none, integers, floats, or else as text.
    """
    name, _, rest = spec.strip().partition(":")
    params: dict = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise ConfigError(f"attack spec {spec!r}: {item!r} is not name=value")
        if key in params:
            raise ConfigError(f"attack spec {spec!r} sets {key} twice")
        params[key] = _literal(value)
    return make_attack(name.strip(), **params)


def _literal(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text
