"""retention: inputs and outputs kept for a time, deleted on request; what each job uses

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_inputs_seconds', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('keep_outputs_seconds', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('inputs_deleted_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('outputs_deleted_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('data_deleted_at', sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index('ix_jobs_keep_outputs', ['keep_outputs_seconds', 'finished_at'])
        batch_op.create_index('ix_jobs_keep_inputs', ['keep_inputs_seconds', 'finished_at'])
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('keep_inputs_seconds', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('keep_outputs_seconds', sa.BigInteger(), nullable=True))
    op.create_table(
        'job_inputs',
        sa.Column('job_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'key'),
    )
    op.create_index('ix_job_inputs_tenant_key', 'job_inputs', ['tenant_id', 'key'])
    op.create_table(
        'released_inputs',
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('tenant_id', 'key'),
    )
    op.create_table(
        'layout_migration',
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('cursor', sa.BigInteger(), nullable=False),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('stage'),
    )
    # What each existing job uses, from its recorded keys (jobs made from now on record
    # it as they are made).
    jobs = sa.table('jobs', sa.column('id', sa.String), sa.column('tenant_id', sa.String),
                    sa.column('input_keys', sa.JSON), sa.column('mask_key', sa.String))
    uses = sa.table('job_inputs', sa.column('job_id', sa.String), sa.column('key', sa.String),
                    sa.column('tenant_id', sa.String))
    bind = op.get_bind()
    rows = []
    for job_id, tenant_id, keys, mask_key in bind.execute(
            sa.select(jobs.c.id, jobs.c.tenant_id, jobs.c.input_keys, jobs.c.mask_key)):
        for key in sorted({*(keys or []), *([mask_key] if mask_key else [])}):
            rows.append({'job_id': job_id, 'key': key, 'tenant_id': tenant_id})
        if len(rows) >= 5000:
            op.bulk_insert(uses, rows)
            rows = []
    if rows:
        op.bulk_insert(uses, rows)


def downgrade() -> None:
    op.drop_table('layout_migration')
    op.drop_table('released_inputs')
    op.drop_index('ix_job_inputs_tenant_key', table_name='job_inputs')
    op.drop_table('job_inputs')
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('keep_outputs_seconds')
        batch_op.drop_column('keep_inputs_seconds')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_keep_inputs')
        batch_op.drop_index('ix_jobs_keep_outputs')
        batch_op.drop_column('data_deleted_at')
        batch_op.drop_column('outputs_deleted_at')
        batch_op.drop_column('inputs_deleted_at')
        batch_op.drop_column('keep_outputs_seconds')
        batch_op.drop_column('keep_inputs_seconds')
