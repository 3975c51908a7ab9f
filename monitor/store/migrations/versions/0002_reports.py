"""Monitoring reports: one summary row per window, the Evidently page kept apart.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("labeled_rows", sa.Integer, nullable=False),
        sa.Column("verdict", sa.String(32), nullable=False),
        sa.Column("drift_share", sa.Float, nullable=True),
        sa.Column("embedding_statistic", sa.Float, nullable=True),
        sa.Column("embedding_p_value", sa.Float, nullable=True),
        sa.Column("estimated_accuracy", sa.Float, nullable=True),
        sa.Column("realized_accuracy", sa.Float, nullable=True),
        sa.Column("macro_f1", sa.Float, nullable=True),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("snapshot", sa.Text, nullable=False),
        # One report per model version and window end: a restarted scheduler skips it.
        sa.UniqueConstraint("model_name", "model_version", "window_end",
                            name="uq_reports_window"),
    )
    op.create_index("ix_reports_created", "reports", ["model_name", "created_at"])
    op.create_table(
        "report_pages",
        sa.Column("report_id", sa.String(32), sa.ForeignKey("reports.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("html_gzip", sa.LargeBinary, nullable=False),
    )
    # APScheduler's job store, in the shape APScheduler 3 expects, so that the migrations
    # stay the only source of the schema (APScheduler only creates it when missing).
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(191), primary_key=True),
        sa.Column("next_run_time", sa.Float(25), index=True),
        sa.Column("job_state", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("apscheduler_jobs")
    op.drop_table("report_pages")
    op.drop_index("ix_reports_created", table_name="reports")
    op.drop_table("reports")
