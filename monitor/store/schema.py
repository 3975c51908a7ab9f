"""Table definitions the repository queries with.

The migrations create the schema; these mirror them for building statements, and a test
checks that the two agree column for column.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from monitor.features import FEATURE_NAMES


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored in UTC and read back aware of it: SQLite keeps no offset and hands
    datetimes back naive, so every column says UTC here, once, instead of at each reader."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("predicted_label", sa.String(100), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("entropy", sa.Float, nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("embedding", sa.LargeBinary, nullable=False),
    sa.Column("embedding_dtype", sa.String(8), nullable=False),
    *[sa.Column(name, sa.Float, nullable=True) for name in FEATURE_NAMES],
    sa.Column("content_type", sa.String(100), nullable=True),
    sa.Column("size_bytes", sa.Integer, nullable=True),
    sa.Column("codec", sa.String(50), nullable=True),
    sa.Column("clip_path", sa.String(300), nullable=True),
    sa.Column("true_label", sa.String(100), nullable=True),
    sa.Column("labeled_at", UTCDateTime(), nullable=True),
    sa.Column("video_id", sa.String(32), nullable=True, index=True),
    # The camera, stream or client the prediction came from (bounded: see sources)
    sa.Column("source_id", sa.String(64), nullable=True),
    # Where in its video or stream the clip lies (seconds), for timelines and span labels
    sa.Column("clip_start_s", sa.Float, nullable=True),
    sa.Column("clip_end_s", sa.Float, nullable=True),
    # False for a long video's clips beyond the few its reports sample (NULL: in reports)
    sa.Column("in_reports", sa.Boolean, nullable=True),
    sa.Column("queue_p_wrong", sa.Float, nullable=True),
    sa.Column("queue_inclusion", sa.Float, nullable=True),
    sa.Column("queue_selected", sa.Boolean, nullable=True),
    sa.Column("queue_served_at", UTCDateTime(), nullable=True),
    sa.Index("ix_predictions_queue", "model_name", "model_version", "queue_selected",
             "queue_served_at"),
    sa.Index("ix_predictions_clip_path", "clip_path",
             sqlite_where=sa.text("clip_path IS NOT NULL"),
             postgresql_where=sa.text("clip_path IS NOT NULL")),
    sa.Index("ix_predictions_clip_age", "created_at",
             sqlite_where=sa.text("clip_path IS NOT NULL"),
             postgresql_where=sa.text("clip_path IS NOT NULL")),
)

# The source ids admitted so far: at most ``serve.max_sources`` (beyond them predictions
# pool as ``other``), so per-source reports, alerts and metrics stay bounded.
sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("first_seen", UTCDateTime(), nullable=False),
)

reports = sa.Table(
    "reports",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("window_start", UTCDateTime(), nullable=False),
    sa.Column("window_end", UTCDateTime(), nullable=False),
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
    sa.Column("estimated_accuracy_low", sa.Float, nullable=True),
    sa.Column("estimated_accuracy_high", sa.Float, nullable=True),
    sa.Column("realized_accuracy_low", sa.Float, nullable=True),
    sa.Column("realized_accuracy_high", sa.Float, nullable=True),
    sa.Column("estimate_method", sa.String(32), nullable=True),
    sa.Column("realized_method", sa.String(32), nullable=True),
    sa.Column("snapshot", sa.Text, nullable=False),
    sa.Column("accuracy_risk", sa.String(16), nullable=True),
    sa.Column("estimable", sa.Boolean, nullable=True),
    sa.Column("labels_needed", sa.Integer, nullable=True),
)

report_pages = sa.Table(
    "report_pages",
    metadata,
    sa.Column("report_id", sa.String(32), sa.ForeignKey("reports.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("html_gzip", sa.LargeBinary, nullable=False),
)

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
)

retrain_decisions = sa.Table(
    "retrain_decisions",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("triggered", sa.Boolean, nullable=False),
    sa.Column("reasons", sa.JSON, nullable=False),
    sa.Column("report_ids", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("mlflow_run_id", sa.String(64), nullable=True),
    sa.Column("challenger_version", sa.String(32), nullable=True),
    sa.Column("gate", sa.JSON, nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Column("holder", sa.String(200), nullable=True),  # the worker running it
    sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
    sa.Index("uq_retrain_pending", "model_name", unique=True,
             sqlite_where=sa.text("status = 'pending'"),
             postgresql_where=sa.text("status = 'pending'")),
)

pending_labels = sa.Table(
    "pending_labels",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("labeled_at", UTCDateTime(), nullable=False),
)

reference_profiles = sa.Table(
    "reference_profiles",
    metadata,
    sa.Column("model_name", sa.String(200), primary_key=True),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("stored_at", UTCDateTime(), nullable=False),
)

# An event to notify about, recorded once under its key (a report, decision or version it
# is about), and its delivery to each webhook: the key is what keeps an event from being
# recorded, and so sent, twice.
alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=True),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_alerts_created", "created_at"),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("alert_id", sa.String(200), sa.ForeignKey("alerts.id"), primary_key=True),
    sa.Column("url", sa.String(2000), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
)

# A long video classified clip by clip in the background. Its clips are logged as
# predictions with video_id = the job's id; the replica working on it holds the job by
# renewing heartbeat_at, and a job whose heartbeat is older than the lease is taken over.
video_jobs = sa.Table(
    "video_jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
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
    sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
    sa.Column("finished_at", UTCDateTime(), nullable=True),
    sa.Index("ix_video_jobs_status", "status", "created_at"),
)

# A live stream a replica pulls frames from; held like a video job, by its heartbeat.
streams = sa.Table(
    "streams",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("url", sa.String(2000), nullable=False),
    sa.Column("source_id", sa.String(64), nullable=False),
    sa.Column("hop", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("holder", sa.String(200), nullable=True),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=True),
    sa.Column("last_frame_at", UTCDateTime(), nullable=True),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
)

# A stream's label changed: when (seconds into the stream, counted from the frame the
# puller first read), to what, and how sure.
stream_events = sa.Table(
    "stream_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("at_s", sa.Float, nullable=False),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Index("ix_stream_events_stream", "stream_id", "id"),
)
