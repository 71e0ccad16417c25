"""Settings for every Fovea process, read from the environment (prefix ``FOVEA_``).

The embedded default keeps everything under ``.fovea/`` in the working directory:
a SQLite job store, a local MLflow store, checkpoints and the generated API token.
"""

from __future__ import annotations

import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The API the dashboard talks to, set by whoever starts it (`fovea dashboard`, `fovea up
# --dashboard`): the dashboard reads only this and the settings, never the platform.
DASHBOARD_API_URL_ENV = "FOVEA_DASHBOARD_API_URL"


def _default_data_roots() -> list[Path]:
    cwd = Path.cwd()
    return [cwd, (cwd / ".." / "shared" / "datasets").resolve()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FOVEA_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.cwd() / ".fovea")
    database_url: str | None = None  # default: sqlite:///<home>/fovea.db
    mlflow_tracking_uri: str | None = None  # default: sqlite:///<home>/mlflow.db
    mlflow_artifact_root: Path | None = None  # default: <home>/mlartifacts
    mlflow_experiment: str = "fovea"
    ray_address: str | None = None  # None: start a local Ray on loopback
    ray_num_cpus: int | None = None  # local Ray only; None: all cores
    ray_num_gpus: int | None = None
    # local Ray only: stopped after this many seconds with no job and no served model (an
    # idle stack then runs no Ray process), started again by the next job (a few seconds);
    # 0: kept up
    ray_idle_stop_s: float = 120.0
    # Colon- or comma-separated; user dataset paths must resolve under one of them.
    data_roots: Annotated[list[Path], NoDecode] = Field(default_factory=_default_data_roots)
    checkpoint_root: Path | None = None  # default: <home>/checkpoints (must be shared by all nodes)
    weights_root: Path | None = None  # the weights store; default: <home>/weights (shared too)
    api_token: str | None = None
    host: str = "127.0.0.1"
    port: int = 8742
    # Tick interval while this scheduler runs jobs: how fresh their progress is in the store
    # (a job's end wakes it at once). Each tick costs a Ray call and a transaction, CPU
    # taken from training on a small machine: no shorter than progress needs.
    scheduler_interval_s: float = 2.0
    scheduler_idle_s: float = 30.0  # longest sleep of an idle scheduler (a commit wakes it)
    sqlite_check_s: float = 1.0  # SQLite: how often to look for other processes' commits
    lease_seconds: float = 60.0
    retry_backoff_s: float = 5.0  # before retry n: retry_backoff_s * 2**(n-1) ...
    retry_backoff_max_s: float = 300.0  # ... at most this
    drain_timeout_s: float = 600.0  # SIGTERM: how long running jobs may finish, then handed back
    # Max running jobs per project (0: unlimited).
    project_quota: int = 0

    # API admission: at most `api_max_concurrency` requests are worked on at once (each holds
    # a database connection); up to `api_max_queue` more wait, each at most
    # `api_queue_timeout_s`; past either limit the answer is 503 with Retry-After, before
    # anything is written. Keep the wait below clients' time-outs (fovea's client: 30 s).
    api_max_concurrency: int = Field(16, ge=1, le=256)
    api_max_queue: int = Field(256, ge=0)
    api_queue_timeout_s: float = Field(10.0, gt=0)
    api_max_body_bytes: int = Field(1_048_576, ge=1024)  # larger request bodies: 413

    # What one job may ask for; more is refused at submit (422 naming the field), since no
    # cluster this platform runs on could start it.
    max_job_cpus: float = Field(64.0, gt=0)
    max_job_gpus: float = Field(8.0, ge=0)
    max_epochs: int = Field(1000, ge=1)
    max_image_size: int = Field(2048, ge=8)

    # -- serving and monitoring ----------------------------------------------------------
    predict_max_images: int = 64  # per request (413 past it)
    predict_max_bytes: int = 64 * 2**20  # per request body (413 past it)
    predict_max_pixels: int = 89_478_485  # per image (PIL's default bomb guard)
    serving_cpus: float = 0.0  # Ray CPUs a replica reserves (0: never blocks training jobs)
    serving_threads: int = Field(default_factory=lambda: min(4, os.cpu_count() or 1))
    prediction_sample_rate: float = 0.0  # share of live images kept (0: none; keeps hashes)
    prediction_retention_days: float = 30.0  # 0: keep forever
    prediction_retention_rows: int = 1_000_000  # per model; 0: no limit
    drift_interval_s: float = 300.0  # scheduled reports; 0: on request only
    drift_alpha: float = 0.05
    drift_min_window: int = 100
    drift_max_window: int = 1000
    drift_permutations: int = 200
    drift_alarm_k: int = 1  # an alarm needs k drifted windows among the last m
    drift_alarm_m: int = 1

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for chunk in value.split(os.pathsep) for p in chunk.split(",")]
            return [Path(p.strip()) for p in parts if p.strip()]
        return value

    @field_validator("data_roots", mode="after")
    @classmethod
    def _resolve_roots(cls, value: list[Path]) -> list[Path]:
        return [p.expanduser().resolve() for p in value]

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'fovea.db'}"

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @cached_property
    def artifact_root(self) -> Path:
        return self.mlflow_artifact_root or self.home / "mlartifacts"

    @cached_property
    def checkpoints(self) -> Path:
        return self.checkpoint_root or self.home / "checkpoints"

    @cached_property
    def weights_dir(self) -> Path:
        return self.weights_root or self.home / "weights"

    @property
    def prediction_samples(self) -> Path:
        """Where sampled live images are kept (prediction_sample_rate > 0)."""
        return self.artifact_root / "prediction-samples"

    @property
    def token_file(self) -> Path:
        return self.home / "api_token"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)

    def resolve_token(self, *, create: bool) -> str | None:
        """The API token: FOVEA_API_TOKEN, else the token file (created 0600 when asked)."""
        if self.api_token:
            return self.api_token
        if self.token_file.exists():
            return self.token_file.read_text().strip()
        if not create:
            return None
        self.ensure_home()
        token = secrets.token_urlsafe(32)
        fd = os.open(self.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        return token

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"
