"""Accuracy estimates with intervals on reports; the labeling queue's sampling design on
predictions.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

REPORT_COLUMNS = ("estimated_accuracy_low", "estimated_accuracy_high",
                  "realized_accuracy_low", "realized_accuracy_high")


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        for name in REPORT_COLUMNS:
            batch.add_column(sa.Column(name, sa.Float, nullable=True))
        batch.add_column(sa.Column("estimate_method", sa.String(32), nullable=True))
        batch.add_column(sa.Column("realized_method", sa.String(32), nullable=True))
    with op.batch_alter_table("predictions") as batch:
        # Set once, when the labeling queue considers the prediction: its estimated chance
        # of being wrong, its inclusion probability, whether its coin chose it, and when a
        # labeler was handed it.
        batch.add_column(sa.Column("queue_p_wrong", sa.Float, nullable=True))
        batch.add_column(sa.Column("queue_inclusion", sa.Float, nullable=True))
        batch.add_column(sa.Column("queue_selected", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("queue_served_at", sa.DateTime(timezone=True),
                                   nullable=True))
    op.create_index("ix_predictions_queue", "predictions",
                    ["model_name", "model_version", "queue_selected", "queue_served_at"])


def downgrade() -> None:
    op.drop_index("ix_predictions_queue", "predictions")
    with op.batch_alter_table("predictions") as batch:
        for name in ("queue_p_wrong", "queue_inclusion", "queue_selected", "queue_served_at"):
            batch.drop_column(name)
    with op.batch_alter_table("reports") as batch:
        for name in (*REPORT_COLUMNS, "estimate_method", "realized_method"):
            batch.drop_column(name)
