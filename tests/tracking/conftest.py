"""One real MLflow store (sqlite + local artifact folder) shared by the tracking tests.

Creating the sqlite schema takes seconds, so the store lives for the session; tests keep
apart by using unique experiment and model names.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from fovea.tracking._mlflow import make_client


@dataclass(frozen=True)
class MlflowStore:
    root: Path
    tracking_uri: str
    artifact_root: Path


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    # The embedded default layout: <home>/mlflow.db and <home>/mlartifacts.
    home = tmp_path_factory.mktemp("fovea-home")
    store = MlflowStore(
        root=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=home / "mlartifacts",
    )
    make_client(store.tracking_uri).search_experiments()  # creates the schema once
    return store


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """An experiment or model name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
