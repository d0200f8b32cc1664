"""Adversarial attacks in [0, 1] pixel space, configured once and applied to batches.

``FGSM`` and ``PGD`` are white-box L-inf attacks on the model's logits; ``PixelAttack``
is the paper's random one-pixel search or Su et al.'s differential evolution (k pixels).
Each returns an ``AttackResult`` carrying the images, per-image facts (success, queries,
distances) and the attack's parameters; ``Attack.key`` names the configuration in stores.
Importing this package does not import TensorFlow; running an attack does.
"""

from ferqueue.attacks.base import Attack, AttackResult
from ferqueue.attacks.gradient import FGSM, PGD
from ferqueue.attacks.pixel import PixelAttack
from ferqueue.attacks.registry import ATTACK_NAMES, attack_classes, make_attack, parse_attack

__all__ = [
    "ATTACK_NAMES",
    "FGSM",
    "PGD",
    "Attack",
    "AttackResult",
    "PixelAttack",
    "attack_classes",
    "make_attack",
    "parse_attack",
]
