"""Retrains claimed by workers: the holder of a running retrain and its last heartbeat, so
another worker takes over one whose worker died.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("retrain_decisions") as batch:
        batch.add_column(sa.Column("holder", sa.String(200), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("retrain_decisions") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("holder")
