"""Table definitions the repository queries with.

The migrations create the schema; these mirror them for building statements, and a test
checks that the two agree column for column.
"""

from __future__ import annotations

import sqlalchemy as sa

from monitor.features import FEATURE_NAMES

metadata = sa.MetaData()

predictions = sa.Table(
    "predictions",
    metadata,
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
    *[sa.Column(name, sa.Float, nullable=True) for name in FEATURE_NAMES],
    sa.Column("content_type", sa.String(100), nullable=True),
    sa.Column("size_bytes", sa.Integer, nullable=True),
    sa.Column("codec", sa.String(50), nullable=True),
    sa.Column("clip_path", sa.String(300), nullable=True),
    sa.Column("true_label", sa.String(100), nullable=True),
    sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=True),
)
