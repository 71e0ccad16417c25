"""retry backoff and pending MLflow run ends

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 02:00:00
"""

import sqlalchemy as sa
from alembic import op

import fovea.platform.store.job_tables

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC = fovea.platform.store.job_tables.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("not_before", UTC, nullable=True))
        batch.add_column(sa.Column("run_end_pending", sa.String(length=16), nullable=True))
        batch.create_index("ix_jobs_run_end_pending", ["run_end_pending"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_run_end_pending")
        batch.drop_column("run_end_pending")
        batch.drop_column("not_before")
