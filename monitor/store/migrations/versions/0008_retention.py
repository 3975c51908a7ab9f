"""Retention: partial indexes over the predictions that keep a clip, so that the garbage
collector finds a clip's rows and the oldest kept clips without scanning the table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_WITH_CLIP = sa.text("clip_path IS NOT NULL")


def upgrade() -> None:
    op.create_index("ix_predictions_clip_path", "predictions", ["clip_path"],
                    sqlite_where=_WITH_CLIP, postgresql_where=_WITH_CLIP)
    op.create_index("ix_predictions_clip_age", "predictions", ["created_at"],
                    sqlite_where=_WITH_CLIP, postgresql_where=_WITH_CLIP)


def downgrade() -> None:
    op.drop_index("ix_predictions_clip_age", "predictions")
    op.drop_index("ix_predictions_clip_path", "predictions")
