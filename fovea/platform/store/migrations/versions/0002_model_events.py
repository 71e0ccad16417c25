"""model events: drift verdicts, promotions and other things that happen to a model

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 11:00:00
"""

import sqlalchemy as sa
from alembic import op

import fovea.platform.store.job_tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("value", sa.String(length=40), nullable=True),
        sa.Column("at", fovea.platform.store.job_tables.UTCDateTime(timezone=True), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("model_events", schema=None) as batch_op:
        batch_op.create_index("ix_model_events_model", ["model_name", "id"], unique=False)
        batch_op.create_index("ix_model_events_kind", ["kind", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_events", schema=None) as batch_op:
        batch_op.drop_index("ix_model_events_kind")
        batch_op.drop_index("ix_model_events_model")
    op.drop_table("model_events")
