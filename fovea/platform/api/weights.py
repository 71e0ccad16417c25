"""/weights: the weights store, read only (files come in by `fovea weights import` or
`pull` on a machine that reaches the store's folder)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fovea.platform.api.deps import SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import WeightsList, WeightsOut
from fovea.platform.weights.service import WeightsEntry, WeightsStore
from fovea.tasks.catalog import CATALOG

router = APIRouter(prefix="/weights", tags=["weights"])

# A name is "<arch>/<tag>": two path segments, so the route takes both.
Segment = Annotated[str, Path(min_length=1, max_length=128)]


def _out(entry: WeightsEntry, *, verified: bool | None = None) -> WeightsOut:
    fits = [
        f"{task}:{key}"
        for task, info in CATALOG.items()
        for key, model in info.torchvision_models.items()
        if model == entry.arch
    ]
    return WeightsOut(**entry.as_dict(), fits=fits, verified=verified)


@router.get("", response_model=WeightsList, responses=error_responses(401, 503))
def list_weights(settings: SettingsDep) -> WeightsList:
    """Every entry of the store, by name."""
    store = WeightsStore(settings.weights_dir)
    return WeightsList(weights=[_out(e) for e in store.entries()], root=str(store.root))


@router.get("/{arch}/{tag}", response_model=WeightsOut, responses=error_responses(401, 404, 422))
def get_weights(
    arch: Segment,
    tag: Segment,
    settings: SettingsDep,
    verify: Annotated[bool, Query(description="re-hash the file (422 when it changed)")] = False,
) -> WeightsOut:
    """One entry; with verify=true its file re-hashed first (a changed file: 422)."""
    store, name = WeightsStore(settings.weights_dir), f"{arch}/{tag}"
    if verify:
        return _out(store.verify(name), verified=True)
    return _out(store.get(name))
