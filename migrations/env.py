"""Alembic's environment for `alembic` run from the repository (alembic.ini). The migrations
themselves ship inside the package, in ferqueue/db/migrations/versions, so that an installed
ferqueue can upgrade its database with `ferqueue db upgrade`."""

from ferqueue.db.session import run_environment

run_environment()
