"""Exactly once where the schema can say so: labels that wait for their prediction, one
reference profile per model version, one pending retrain per model.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

OPEN = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_table(
        "pending_labels",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("label", sa.String(100), nullable=False),
        sa.Column("labeled_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "reference_profiles",
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO reference_profiles (model_name, model_version, rows, stored_at) "
        "SELECT model_name, model_version, COUNT(*), MIN(created_at) FROM predictions "
        "WHERE source = 'reference' GROUP BY model_name, model_version")
    # Repeated admin requests queued several pending decisions per model: keep the oldest.
    op.execute(
        "UPDATE retrain_decisions SET status = 'merged', error = 'merged into the older "
        "pending decision of this model by migration 0005' WHERE status = 'pending' AND "
        "EXISTS (SELECT 1 FROM retrain_decisions AS older WHERE older.status = 'pending' AND "
        "older.model_name = retrain_decisions.model_name AND (older.created_at < "
        "retrain_decisions.created_at OR (older.created_at = retrain_decisions.created_at "
        "AND older.id < retrain_decisions.id)))")
    op.create_index("uq_retrain_pending", "retrain_decisions", ["model_name"], unique=True,
                    sqlite_where=OPEN, postgresql_where=OPEN)


def downgrade() -> None:
    op.drop_index("uq_retrain_pending", "retrain_decisions")
    op.drop_table("reference_profiles")
    op.drop_table("pending_labels")
