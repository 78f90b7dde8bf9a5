"""queue position: jobs indexed by (queue, status, seq), so a queued job's place is one
range count

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04
"""
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The new index serves every query the old (queue, status) one did.
    op.create_index('ix_jobs_queue_status_seq', 'jobs', ['queue', 'status', 'seq'])
    op.drop_index('ix_jobs_queue_status', table_name='jobs')


def downgrade() -> None:
    op.create_index('ix_jobs_queue_status', 'jobs', ['queue', 'status'])
    op.drop_index('ix_jobs_queue_status_seq', table_name='jobs')
