"""the root's ARL (revoked CA certificates), signed offline and served to relying parties

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 06:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ca_service.db.base


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ca_revocation_lists',
    sa.Column('number', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('issuer_role', sa.String(length=16), nullable=False),
    sa.Column('this_update', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('next_update', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('der', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', ca_service.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('number', name=op.f('pk_ca_revocation_lists'))
    )
    with op.batch_alter_table('ca_revocation_lists', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ca_revocation_lists_issuer_role'), ['issuer_role'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ca_revocation_lists', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ca_revocation_lists_issuer_role'))
    op.drop_table('ca_revocation_lists')
