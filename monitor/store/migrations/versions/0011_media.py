"""Long videos classified in the background, live streams and their label changes; each
clip's place in its video or stream.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("clip_start_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("clip_end_s", sa.Float, nullable=True))
        batch.add_column(sa.Column("in_reports", sa.Boolean, nullable=True))
    op.create_table(
        "video_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("location", sa.String(2000), nullable=False),
        sa.Column("uploaded", sa.Boolean, nullable=False),
        sa.Column("filename", sa.String(300), nullable=True),
        sa.Column("source_id", sa.String(64), nullable=True),
        sa.Column("size_bytes", sa.BigInteger, nullable=True),
        sa.Column("duration_s", sa.Float, nullable=True),
        sa.Column("clips_expected", sa.Integer, nullable=True),
        sa.Column("clips_done", sa.Integer, nullable=False),
        sa.Column("seconds_done", sa.Float, nullable=False),
        sa.Column("label", sa.String(100), nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("model_name", sa.String(200), nullable=True),
        sa.Column("model_version", sa.String(32), nullable=True),
        sa.Column("error", sa.String(500), nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_video_jobs_status", "video_jobs", ["status", "created_at"])
    op.create_table(
        "streams",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("url", sa.String(2000), nullable=False),
        sa.Column("source_id", sa.String(64), nullable=False),
        sa.Column("hop", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("last_frame_at", TS, nullable=True),
        sa.Column("stopped_at", TS, nullable=True),
    )
    op.create_table(
        "stream_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("stream_id", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("at_s", sa.Float, nullable=False),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
    )
    op.create_index("ix_stream_events_stream", "stream_events", ["stream_id", "id"])


def downgrade() -> None:
    op.drop_table("stream_events")
    op.drop_table("streams")
    op.drop_table("video_jobs")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("in_reports")
        batch.drop_column("clip_end_s")
        batch.drop_column("clip_start_s")
