"""What the registry reads back about registered models, as plain dataclasses: the API
serves them as they are (its response models), so this module imports neither MLflow nor
torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelVersionInfo:
    version: int
    run_id: str | None
    created_at: str  # ISO 8601, UTC
    status: str
    aliases: list[str]
    is_champion: bool
    task: str | None
    main_metric: str | None
    main_metric_value: float | None
    metrics: dict[str, float | None]
    champion_decision: str | None  # pending | promoted | kept; None if not logged by Fovea
    source: str


@dataclass(frozen=True)
class ModelSummary:
    name: str
    task: str | None
    description: str | None
    created_at: str
    updated_at: str
    latest_version: int | None
    champion_version: int | None
    main_metric: str | None
    champion_metric: float | None
    aliases: dict[str, int]


@dataclass(frozen=True)
class ModelDetail:
    name: str
    task: str | None
    description: str | None
    created_at: str
    updated_at: str
    champion_version: int | None
    aliases: dict[str, int]
    versions: list[ModelVersionInfo] = field(default_factory=list)  # newest first
