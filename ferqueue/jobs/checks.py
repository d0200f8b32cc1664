"""Checks that several job kinds make of their specs, each naming the offending value."""

from __future__ import annotations

from ferqueue.errors import ConfigError
from ferqueue.vocabulary import SUBSETS


def check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ConfigError(f"unknown subset {subset!r}; choose {' or '.join(SUBSETS)}")


def check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit {limit!r} must be a positive integer")


def check_image_size(artifact, ds_row) -> None:
    if artifact.image_size != ds_row.image_size:
        raise ConfigError(f"model {artifact.id} takes {artifact.image_size}px images, dataset {ds_row.id} is "
                          f"{ds_row.image_size}px: use --image-size {artifact.image_size}")


def check_model_fits(artifact, ds_row) -> None:
    """Refuse a model that cannot take a dataset's images, or predicts other classes."""
    check_image_size(artifact, ds_row)
    if list(artifact.class_names) != list(ds_row.class_names):
        raise ConfigError(f"model {artifact.id} predicts {artifact.class_names}, dataset {ds_row.id} has "
                          f"{ds_row.class_names}: use `ferqueue cross-eval` to map classes")


def check_attacks_fit(attacks: list[str], image_size: int) -> None:
    """Refuse an attack that cannot run on images of this size (k pixels of a smaller image)."""
    from ferqueue.attacks import parse_attack

    for spec in attacks:
        parse_attack(spec).check_image_size(image_size)


def required(value, what: str, partial: bool) -> bool:
    """Whether an id that a pipeline step fills in later is known; an error if it must be."""
    if value is None and not partial:
        raise ConfigError(f"{what} is missing")
    return value is not None
