"""duty state: where a background duty (collateral re-appraisal) left off, shared by all replicas

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 12:50:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ca_service.db.base


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('duty_states',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('state', sa.JSON(), nullable=False),
    sa.Column('updated_at', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_duty_states'))
    )


def downgrade() -> None:
    op.drop_table('duty_states')
