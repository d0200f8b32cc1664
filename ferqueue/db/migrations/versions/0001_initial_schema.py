"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23 20:15:44.474115
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('datasets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('image_size', sa.Integer(), nullable=False),
    sa.Column('num_examples', sa.Integer(), nullable=False),
    sa.Column('class_names', sa.JSON(), nullable=False),
    sa.Column('info', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_datasets')),
    sa.UniqueConstraint('fingerprint', 'image_size', name='uq_datasets_fingerprint_size')
    )
    op.create_table('experiments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_experiments')),
    sa.UniqueConstraint('name', name=op.f('uq_experiments_name'))
    )
    op.create_table('model_artifacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('architecture', sa.String(length=64), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('num_params', sa.BigInteger(), nullable=False),
    sa.Column('image_size', sa.Integer(), nullable=False),
    sa.Column('class_names', sa.JSON(), nullable=False),
    sa.Column('weights', sa.String(length=32), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_artifacts')),
    sa.UniqueConstraint('sha256', name=op.f('uq_model_artifacts_sha256'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=True),
    sa.Column('parent_id', sa.Integer(), nullable=True),
    sa.Column('step', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('executor', sa.String(length=16), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('n_shards', sa.Integer(), nullable=False),
    sa.Column('store_path', sa.Text(), nullable=True),
    sa.Column('store_sha256', sa.String(length=64), nullable=True),
    sa.Column('store_size', sa.BigInteger(), nullable=True),
    sa.Column('merge_count', sa.Integer(), nullable=False),
    sa.Column('result', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("kind IN ('generate', 'train', 'evaluate', 'pipeline', 'compare')", name=op.f('ck_jobs_kind')),
    sa.CheckConstraint("status IN ('pending', 'running', 'merging', 'done', 'failed', 'cancelled')", name=op.f('ck_jobs_status')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_jobs_experiment_id_experiments')),
    sa.ForeignKeyConstraint(['parent_id'], ['jobs.id'], name=op.f('fk_jobs_parent_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs')),
    sa.UniqueConstraint('parent_id', 'step', name='uq_jobs_parent_step')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_parent_id'), ['parent_id'], unique=False)

    op.create_table('splits',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('test_fraction', sa.Float(), nullable=False),
    sa.Column('fold', sa.Integer(), nullable=False),
    sa.Column('n_folds', sa.Integer(), nullable=True),
    sa.Column('n_train', sa.Integer(), nullable=False),
    sa.Column('n_test', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_splits_dataset_id_datasets')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_splits')),
    sa.UniqueConstraint('fingerprint', name=op.f('uq_splits_fingerprint'))
    )
    op.create_table('shards',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('index', sa.Integer(), nullable=False),
    sa.Column('attack_key', sa.String(length=200), nullable=False),
    sa.Column('attack_spec', sa.String(length=400), nullable=False),
    sa.Column('start', sa.Integer(), nullable=False),
    sa.Column('stop', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=True),
    sa.Column('path', sa.Text(), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('n_examples', sa.Integer(), nullable=True),
    sa.Column('n_success', sa.Integer(), nullable=True),
    sa.Column('queries', sa.BigInteger(), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed', 'cancelled')", name=op.f('ck_shards_status')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_shards_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_shards')),
    sa.UniqueConstraint('job_id', 'index', name='uq_shards_job_index')
    )
    with op.batch_alter_table('shards', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_shards_job_id'), ['job_id'], unique=False)

    op.create_table('training_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('split_id', sa.Integer(), nullable=False),
    sa.Column('architecture', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=32), nullable=False),
    sa.Column('store_job_id', sa.Integer(), nullable=True),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('artifact_id', sa.Integer(), nullable=True),
    sa.Column('epochs_run', sa.Integer(), nullable=True),
    sa.Column('wall_seconds', sa.Float(), nullable=True),
    sa.Column('generation_seconds', sa.Float(), nullable=True),
    sa.Column('gradient_evals', sa.BigInteger(), nullable=True),
    sa.Column('generation_gradient_evals', sa.BigInteger(), nullable=True),
    sa.Column('examples_seen', sa.BigInteger(), nullable=True),
    sa.Column('history', sa.JSON(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('started_at', sa.DateTime(), nullable=True),
    sa.Column('finished_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("mode IN ('standard', 'offline_adv', 'online_fgsm', 'online_fgsm_rs')", name=op.f('ck_training_runs_mode')),
    sa.CheckConstraint("status IN ('pending', 'running', 'done', 'failed', 'cancelled')", name=op.f('ck_training_runs_status')),
    sa.ForeignKeyConstraint(['artifact_id'], ['model_artifacts.id'], name=op.f('fk_training_runs_artifact_id_model_artifacts')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_training_runs_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_training_runs_experiment_id_experiments')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_training_runs_job_id_jobs')),
    sa.ForeignKeyConstraint(['split_id'], ['splits.id'], name=op.f('fk_training_runs_split_id_splits')),
    sa.ForeignKeyConstraint(['store_job_id'], ['jobs.id'], name=op.f('fk_training_runs_store_job_id_jobs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_training_runs'))
    )
    op.create_table('evaluations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('experiment_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.Integer(), nullable=True),
    sa.Column('artifact_id', sa.Integer(), nullable=False),
    sa.Column('training_run_id', sa.Integer(), nullable=True),
    sa.Column('dataset_id', sa.Integer(), nullable=False),
    sa.Column('split_id', sa.Integer(), nullable=True),
    sa.Column('subset', sa.String(length=32), nullable=False),
    sa.Column('setting', sa.String(length=16), nullable=False),
    sa.Column('attack', sa.String(length=32), nullable=False),
    sa.Column('attack_key', sa.String(length=200), nullable=False),
    sa.Column('attack_params', sa.JSON(), nullable=True),
    sa.Column('epsilon', sa.Float(), nullable=True),
    sa.Column('source_artifact_id', sa.Integer(), nullable=True),
    sa.Column('n', sa.Integer(), nullable=False),
    sa.Column('accuracy', sa.Float(), nullable=False),
    sa.Column('precision_weighted', sa.Float(), nullable=False),
    sa.Column('recall_weighted', sa.Float(), nullable=False),
    sa.Column('f1_weighted', sa.Float(), nullable=False),
    sa.Column('precision_macro', sa.Float(), nullable=False),
    sa.Column('recall_macro', sa.Float(), nullable=False),
    sa.Column('f1_macro', sa.Float(), nullable=False),
    sa.Column('mean_confidence', sa.Float(), nullable=False),
    sa.Column('success_rate', sa.Float(), nullable=True),
    sa.Column('mean_queries', sa.Float(), nullable=True),
    sa.Column('mean_linf', sa.Float(), nullable=True),
    sa.Column('mean_l0', sa.Float(), nullable=True),
    sa.Column('confusion', sa.JSON(), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.Column('class_names', sa.JSON(), nullable=False),
    sa.Column('unmapped', sa.JSON(), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("setting IN ('clean', 'whitebox', 'transfer')", name=op.f('ck_evaluations_setting')),
    sa.ForeignKeyConstraint(['artifact_id'], ['model_artifacts.id'], name=op.f('fk_evaluations_artifact_id_model_artifacts')),
    sa.ForeignKeyConstraint(['dataset_id'], ['datasets.id'], name=op.f('fk_evaluations_dataset_id_datasets')),
    sa.ForeignKeyConstraint(['experiment_id'], ['experiments.id'], name=op.f('fk_evaluations_experiment_id_experiments')),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], name=op.f('fk_evaluations_job_id_jobs')),
    sa.ForeignKeyConstraint(['source_artifact_id'], ['model_artifacts.id'], name=op.f('fk_evaluations_source_artifact_id_model_artifacts')),
    sa.ForeignKeyConstraint(['split_id'], ['splits.id'], name=op.f('fk_evaluations_split_id_splits')),
    sa.ForeignKeyConstraint(['training_run_id'], ['training_runs.id'], name=op.f('fk_evaluations_training_run_id_training_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_artifact_id'), ['artifact_id'], unique=False)




def downgrade() -> None:

    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_artifact_id'))

    op.drop_table('evaluations')
    op.drop_table('training_runs')
    with op.batch_alter_table('shards', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_shards_job_id'))

    op.drop_table('shards')
    op.drop_table('splits')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_parent_id'))

    op.drop_table('jobs')
    op.drop_table('model_artifacts')
    op.drop_table('experiments')
    op.drop_table('datasets')

