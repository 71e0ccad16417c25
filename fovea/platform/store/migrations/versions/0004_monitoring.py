"""monitoring: prediction log, drift reports, batch scoring runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 12:30:00
"""

import sqlalchemy as sa
from alembic import op

import fovea.platform.store.job_tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC = fovea.platform.store.job_tables.UTCDateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("file_name", sa.String(length=500), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        *(
            sa.Column(name, sa.Float(), nullable=False)
            for name in (
                "width",
                "height",
                "aspect",
                "brightness",
                "contrast",
                "saturation",
                "sharpness",
                "mean_r",
                "mean_g",
                "mean_b",
            )
        ),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("image_uri", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("predictions", schema=None) as batch_op:
        batch_op.create_index("ix_predictions_model", ["model_name", "id"], unique=False)
        batch_op.create_index("ix_predictions_model_at", ["model_name", "at"], unique=False)

    op.create_table(
        "drift_reports",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("first_prediction_id", sa.BigInteger(), nullable=True),
        sa.Column("last_prediction_id", sa.BigInteger(), nullable=True),
        sa.Column("n_live", sa.Integer(), nullable=False),
        sa.Column("n_reference", sa.Integer(), nullable=False),
        sa.Column("window_verdict", sa.String(length=16), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("drift_reports", schema=None) as batch_op:
        batch_op.create_index("ix_drift_reports_model", ["model_name", "id"], unique=False)

    op.create_table(
        "score_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("model_name", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=32), nullable=False),
        sa.Column("folder", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("done", sa.Integer(), nullable=False),
        sa.Column("failed_images", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("finished_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("score_runs", schema=None) as batch_op:
        batch_op.create_index("ix_score_runs_model", ["model_name", "created_at"], unique=False)


def downgrade() -> None:
    for table, indexes in (
        ("score_runs", ["ix_score_runs_model"]),
        ("drift_reports", ["ix_drift_reports_model"]),
        ("predictions", ["ix_predictions_model_at", "ix_predictions_model"]),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            for index in indexes:
                batch_op.drop_index(index)
        op.drop_table(table)
