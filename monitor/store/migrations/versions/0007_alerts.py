"""Notifications: each event once, under its key, and its delivery to each webhook.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_alerts_created", "alerts", ["created_at"])
    op.create_table(
        "alert_deliveries",
        sa.Column("alert_id", sa.String(200), sa.ForeignKey("alerts.id"), primary_key=True),
        sa.Column("url", sa.String(2000), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_alert_deliveries_due", "alert_deliveries",
                    ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_alert_deliveries_due", "alert_deliveries")
    op.drop_table("alert_deliveries")
    op.drop_index("ix_alerts_created", "alerts")
    op.drop_table("alerts")
