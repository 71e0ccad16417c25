"""Monitoring tables: the prediction log, drift reports, batch scoring runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from fovea.platform.store.job_tables import Base, UTCDateTime, utcnow

# BIGINT on PostgreSQL, INTEGER (the rowid alias, so it autoincrements) on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Prediction(Base):
    """One image a served model saw: what it was like, what the model said, its embedding.

    The embedding is the model's backbone features projected on the version's reference
    principal components, stored as float16 bytes (`embedding_dim` values): 64 bytes for
    32 components, all the drift tests compare (see fovea/tasks/reference.py).
    """

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(32))
    request_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(16))  # "api" | "batch"
    file_name: Mapped[str | None] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    # image statistics (fovea.tasks.reference.STATISTICS)
    width: Mapped[float] = mapped_column(Float)
    height: Mapped[float] = mapped_column(Float)
    aspect: Mapped[float] = mapped_column(Float)
    brightness: Mapped[float] = mapped_column(Float)
    contrast: Mapped[float] = mapped_column(Float)
    saturation: Mapped[float] = mapped_column(Float)
    sharpness: Mapped[float] = mapped_column(Float)
    mean_r: Mapped[float] = mapped_column(Float)
    mean_g: Mapped[float] = mapped_column(Float)
    mean_b: Mapped[float] = mapped_column(Float)
    # prediction summary: the fields of the model's task (fovea.tasks.profile.SUMMARIES)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON)
    embedding: Mapped[bytes] = mapped_column(LargeBinary)
    embedding_dim: Mapped[int] = mapped_column(Integer)
    image_uri: Mapped[str | None] = mapped_column(Text)  # a sampled copy, when sampling is on

    __table_args__ = (
        Index("ix_predictions_model", "model_name", "id"),
        Index("ix_predictions_model_at", "model_name", "at"),
    )


class DriftReport(Base):
    """One drift report: a window of the log against the version's reference."""

    __tablename__ = "drift_reports"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(32))
    trigger: Mapped[str] = mapped_column(String(16))  # "schedule" | "request"
    first_prediction_id: Mapped[int | None] = mapped_column(BigInteger)
    last_prediction_id: Mapped[int | None] = mapped_column(BigInteger)
    n_live: Mapped[int] = mapped_column(Integer)
    n_reference: Mapped[int] = mapped_column(Integer)
    window_verdict: Mapped[str] = mapped_column(String(16))  # this window alone
    verdict: Mapped[str] = mapped_column(String(16))  # after the k-of-m alarm rule
    reasons: Mapped[list[str]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # tests, histograms, MMD null
    seconds: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_drift_reports_model", "model_name", "id"),)


class ScoreRun(Base):
    """A batch scoring of a folder of images by a registered model."""

    __tablename__ = "score_runs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str] = mapped_column(String(32))
    folder: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16))  # running | succeeded | failed
    total: Mapped[int] = mapped_column(Integer, default=0)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed_images: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_score_runs_model", "model_name", "created_at"),)
