"""comparisons: one input run on several models, side by side, with the user's vote

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'comparisons',
        sa.Column('seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'),
                  autoincrement=True, nullable=False),
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('operation', sa.String(length=64), nullable=False),
        sa.Column('prompt', sa.Text(), nullable=True),
        sa.Column('models', sa.JSON(), nullable=False),
        sa.Column('metadata', sa.JSON(), nullable=False),
        sa.Column('vote_model', sa.String(length=128), nullable=True),
        sa.Column('voted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('idempotency_key', sa.String(length=255), nullable=True),
        sa.Column('request_hash', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('seq'),
        sa.UniqueConstraint('id'),
        sa.UniqueConstraint('tenant_id', 'idempotency_key',
                            name='uq_comparisons_tenant_idempotency'),
    )
    op.create_index('ix_comparisons_tenant_seq', 'comparisons', ['tenant_id', 'seq'])
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('comparison_id', sa.String(length=32), nullable=True))
        batch_op.create_foreign_key('fk_jobs_comparison', 'comparisons', ['comparison_id'],
                                    ['id'], ondelete='CASCADE')
        batch_op.create_index('ix_jobs_comparison', ['comparison_id'])
        # Recommendations read a window of finished jobs per model.
        batch_op.create_index('ix_jobs_model_finished', ['model', 'finished_at'])


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_model_finished')
        batch_op.drop_index('ix_jobs_comparison')
        batch_op.drop_constraint('fk_jobs_comparison', type_='foreignkey')
        batch_op.drop_column('comparison_id')
    op.drop_index('ix_comparisons_tenant_seq', table_name='comparisons')
    op.drop_table('comparisons')
