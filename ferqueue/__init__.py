"""ferqueue: measure and harden facial-expression-recognition models against adversarial attacks."""

__version__ = "0.1.0"
