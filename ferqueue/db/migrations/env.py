"""Alembic's environment for the migrations shipped with ferqueue (see ferqueue.db.session)."""

from ferqueue.db.session import run_environment

run_environment()
