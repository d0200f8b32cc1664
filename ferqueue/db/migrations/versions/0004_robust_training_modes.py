"""robust training modes: refresh_adv, n_fgsm, pgd_at and trades join the modes a training run may have

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 23:50:00
"""

from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

OLD = ('standard', 'offline_adv', 'online_fgsm', 'online_fgsm_rs')
NEW = (*OLD, 'refresh_adv', 'n_fgsm', 'pgd_at', 'trades')


def _modes(modes: tuple[str, ...]) -> str:
    return "mode IN (" + ", ".join(f"'{m}'" for m in modes) + ")"


def upgrade() -> None:
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_training_runs_mode'), type_='check')
        batch_op.create_check_constraint(op.f('ck_training_runs_mode'), _modes(NEW))


def downgrade() -> None:
    op.execute("DELETE FROM training_runs WHERE mode IN ('refresh_adv', 'n_fgsm', 'pgd_at', 'trades')")
    with op.batch_alter_table('training_runs', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_training_runs_mode'), type_='check')
        batch_op.create_check_constraint(op.f('ck_training_runs_mode'), _modes(OLD))
