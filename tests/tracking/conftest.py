"""One real MLflow store (sqlite + local artifact folder) shared by the tracking tests.

Creating the sqlite schema takes seconds, so the store lives for the session; tests keep
apart by using unique experiment and model names.
"""

from __future__ import annotations

import uuid

import pytest

from tests.support.stores import MlflowStore


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> MlflowStore:
    return MlflowStore.create(tmp_path_factory.mktemp("fovea-home"))


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """An experiment or model name no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}".replace("[", "-").replace("]", "")
