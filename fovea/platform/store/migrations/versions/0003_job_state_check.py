"""jobs.state admits only the JobState values (a CHECK beside the typed Enum column)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Persisted values are forever: this list only ever grows.
STATES = ("queued", "running", "succeeded", "failed", "cancelled")


def upgrade() -> None:
    # batch: SQLite cannot add a constraint in place, so the table is copied
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_check_constraint(
            "ck_jobs_state", "state IN (" + ", ".join(f"'{s}'" for s in STATES) + ")"
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("ck_jobs_state", type_="check")
