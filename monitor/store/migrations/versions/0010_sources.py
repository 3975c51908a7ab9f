"""Predictions carry the source they came from (a camera, a stream, a client), and the
admitted source ids are kept, so their number stays bounded.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("source_id", sa.String(64), nullable=True))
    op.create_table(
        "sources",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sources")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("source_id")
