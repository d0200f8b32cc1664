"""Celery workers for ferqueue: the app (celery_app) and thin task wrappers (tasks)."""
