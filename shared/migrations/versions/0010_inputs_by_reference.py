"""inputs by reference: jobs record their input references; direct uploads

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('input_refs', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('inputs_upright', sa.Boolean(), nullable=True))
    op.create_table(
        'uploads',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('tenant_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=200), nullable=False),
        sa.Column('content_type', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_uploads_expires', 'uploads', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_uploads_expires', table_name='uploads')
    op.drop_table('uploads')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('inputs_upright')
        batch_op.drop_column('input_refs')
