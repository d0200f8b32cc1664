"""job kinds come from the registry of ferqueue.jobs: no check constraint on jobs.kind

A new job kind is one module in ferqueue/jobs/kinds; the ledger accepts its name without
a migration.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 18:00:00
"""

from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_jobs_kind'), type_='check')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_check_constraint(
            op.f('ck_jobs_kind'), "kind IN ('generate', 'train', 'evaluate', 'pipeline', 'compare')")
