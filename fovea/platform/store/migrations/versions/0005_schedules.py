"""retraining schedules and their events

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 12:00:00
"""

import sqlalchemy as sa
from alembic import op

import fovea.platform.store.job_tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = fovea.platform.store.job_tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("template", sa.JSON(), nullable=False),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("overlap", sa.String(length=16), nullable=False),
        sa.Column("misfire_grace_s", sa.Integer(), nullable=False),
        sa.Column("skip_if_data_unchanged", sa.Boolean(), nullable=False),
        sa.Column("drift_model", sa.String(length=200), nullable=True),
        sa.Column("drift_cooldown_s", sa.Integer(), nullable=False),
        sa.Column("drift_max_per_day", sa.Integer(), nullable=False),
        sa.Column("drift_cursor", sa.Integer(), nullable=False),
        sa.Column("next_fire_at", UTC, nullable=True),
        sa.Column("last_fire_at", UTC, nullable=True),
        sa.Column("last_job_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index("ix_schedules_due", ["enabled", "next_fire_at"], unique=False)

    op.create_table(
        "schedule_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("schedule_id", sa.String(length=32), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=True),
        sa.Column("fire_time", UTC, nullable=True),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["schedule_id"], ["schedules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedule_events", schema=None) as batch_op:
        batch_op.create_index("ix_schedule_events_schedule", ["schedule_id", "id"], unique=False)
        batch_op.create_index("ix_schedule_events_job", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("schedule_events", schema=None) as batch_op:
        batch_op.drop_index("ix_schedule_events_job")
        batch_op.drop_index("ix_schedule_events_schedule")
    op.drop_table("schedule_events")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index("ix_schedules_due")
    op.drop_table("schedules")
