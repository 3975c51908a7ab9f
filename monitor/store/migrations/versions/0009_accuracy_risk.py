"""Two questions per report: whether accuracy is at risk (or cannot be estimated without
labels, with the labels that would settle it), beside whether the inputs drifted.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("accuracy_risk", sa.String(16), nullable=True))
        batch.add_column(sa.Column("estimable", sa.Boolean, nullable=True))
        batch.add_column(sa.Column("labels_needed", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("labels_needed")
        batch.drop_column("estimable")
        batch.drop_column("accuracy_risk")
