"""Flower, as `ferqueue flower` runs it: Celery's Flower with every page behind basic auth.

Flower serves ``/metrics`` (Prometheus) and ``/healthcheck`` without asking for the
credentials that protect every other page; this process puts those two behind the same
check before Flower starts. Run by `ferqueue flower` as ``python -m ferqueue.monitor ARGS``;
ARGS go to ``celery -A workers.celery_app flower``.
"""

from __future__ import annotations

import sys


def protect_open_pages() -> None:
    """Make Flower's metrics and health pages ask for the configured credentials, like the rest."""
    import tornado.web
    from flower.views import monitor

    for handler in (monitor.Metrics, monitor.Healthcheck):
        if not getattr(handler.get, "_ferqueue_protected", False):
            protected = tornado.web.authenticated(handler.get)
            protected._ferqueue_protected = True
            handler.get = protected


def main(argv: list[str] | None = None) -> int:
    from celery.bin.celery import celery

    from ferqueue.queue import WORKER_APP

    protect_open_pages()
    return celery(["-A", WORKER_APP, "flower", *(sys.argv[1:] if argv is None else argv)], prog_name="celery")


if __name__ == "__main__":
    sys.exit(main())
