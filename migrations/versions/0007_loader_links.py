"""loader certificates: the TEE instance each certificate attests, a loader's CVM certificate

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 06:45:00.000000
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.add_column(sa.Column('instance_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('cvm_serial', sa.String(length=42), nullable=True))
        batch_op.create_index(batch_op.f('ix_certificates_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_certificates_cvm_serial'), ['cvm_serial'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('certificates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_certificates_cvm_serial'))
        batch_op.drop_index(batch_op.f('ix_certificates_instance_id'))
        batch_op.drop_column('cvm_serial')
        batch_op.drop_column('instance_id')
