"""integrity reports (loader-signed, byte-exact; one log leaf each)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 02:59:51.360076
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ca_service.db.base


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('integrity_reports',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('report', sa.LargeBinary(), nullable=False),
    sa.Column('signature', sa.LargeBinary(), nullable=False),
    sa.Column('alg', sa.String(length=32), nullable=False),
    sa.Column('serial', sa.String(length=42), nullable=False),
    sa.Column('order_id', sa.String(length=128), nullable=False),
    sa.Column('issued_at', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('received_at', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('log_index', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_integrity_reports')),
    sa.UniqueConstraint('log_index', name=op.f('uq_integrity_reports_log_index')),
    sa.UniqueConstraint('sha256', name=op.f('uq_integrity_reports_sha256'))
    )
    with op.batch_alter_table('integrity_reports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_integrity_reports_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_integrity_reports_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_integrity_reports_serial'), ['serial'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('integrity_reports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_integrity_reports_serial'))
        batch_op.drop_index(batch_op.f('ix_integrity_reports_received_at'))
        batch_op.drop_index(batch_op.f('ix_integrity_reports_order_id'))

    op.drop_table('integrity_reports')
