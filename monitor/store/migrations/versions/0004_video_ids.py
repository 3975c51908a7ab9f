"""Video ids: a long video is logged as one row per clip, linked by the video's id.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("video_id", sa.String(32), nullable=True))
    op.create_index("ix_predictions_video_id", "predictions", ["video_id"])


def downgrade() -> None:
    op.drop_index("ix_predictions_video_id", "predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("video_id")
