"""Predictions: production rows and reference profiles in one table, marked by source.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

FEATURES = ("brightness", "contrast", "sharpness", "saturation", "motion_energy", "noise",
            "frame_count", "fps", "width", "height", "duration")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("predicted_label", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("entropy", sa.Float, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("embedding", sa.LargeBinary, nullable=False),
        sa.Column("embedding_dtype", sa.String(8), nullable=False),
        *[sa.Column(name, sa.Float, nullable=True) for name in FEATURES],
        sa.Column("content_type", sa.String(100), nullable=True),
        sa.Column("size_bytes", sa.Integer, nullable=True),
        sa.Column("codec", sa.String(50), nullable=True),
        sa.Column("clip_path", sa.String(300), nullable=True),
        sa.Column("true_label", sa.String(100), nullable=True),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_predictions_window", "predictions",
                    ["model_name", "model_version", "source", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_window", table_name="predictions")
    op.drop_table("predictions")
