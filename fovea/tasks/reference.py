"""A model version's frozen reference profile for drift, and its file format. Torch-free:
the API and the scheduler read references to compute drift reports.

Built at the end of training from the profile of (at most MAX_REFERENCE) validation
images (profile.py): statistics, prediction summaries, and the embeddings projected on
their first PCA_COMPONENTS principal components. The projection travels with the
reference, so live embeddings are projected alike; the log stores only projections
(a 32-dimensional float16 vector per image instead of ~500-2,000 float32 features), which
is all the drift tests compare.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

STATISTICS = (
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
MAX_REFERENCE = 2000
PCA_COMPONENTS = 32
REFERENCE_FORMAT = 1
REFERENCE_ARTIFACT = "monitoring/drift_reference.npz"


class ProfileLike(Protocol):
    stats: dict[str, np.ndarray]
    embeddings: np.ndarray
    summary: list[dict[str, Any]]


@dataclass
class Reference:
    """A model version's reference profile, as stored (`to_npz` / `from_npz`)."""

    stats: dict[str, np.ndarray]  # STATISTICS -> float32 [N]
    embeddings: np.ndarray  # float32 [N, k]: projected on the principal components
    pca_mean: np.ndarray  # float32 [D]
    pca_components: np.ndarray  # float32 [k, D]
    explained_variance: float  # share of the variance the k components keep
    summary: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)  # task, class_names, source, count

    def project(self, embeddings: np.ndarray) -> np.ndarray:
        """Raw embeddings [M, D] -> [M, k], as the reference's were."""
        return ((embeddings - self.pca_mean) @ self.pca_components.T).astype(np.float32)

    def to_npz(self) -> bytes:
        arrays = {f"stat/{name}": values for name, values in self.stats.items()}
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            embeddings=self.embeddings,
            pca_mean=self.pca_mean,
            pca_components=self.pca_components,
            meta=np.frombuffer(
                json.dumps(
                    {
                        **self.meta,
                        "format": REFERENCE_FORMAT,
                        "explained_variance": self.explained_variance,
                        "summary": self.summary,
                    }
                ).encode(),
                dtype=np.uint8,
            ),
            **arrays,
        )
        return buffer.getvalue()

    @classmethod
    def from_npz(cls, data: bytes) -> Reference:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(npz["meta"].tobytes().decode())
            if meta.pop("format", None) != REFERENCE_FORMAT:
                raise ValueError("not a drift reference of this format")
            stats = {name: npz[f"stat/{name}"] for name in STATISTICS}
            return cls(
                stats=stats,
                embeddings=npz["embeddings"],
                pca_mean=npz["pca_mean"],
                pca_components=npz["pca_components"],
                explained_variance=float(meta.pop("explained_variance")),
                summary=meta.pop("summary"),
                meta=meta,
            )


def build_reference(
    profile: ProfileLike, *, meta: Mapping[str, Any], components: int = PCA_COMPONENTS
) -> Reference:
    """The frozen reference from a profile of (at most MAX_REFERENCE) validation images."""
    embeddings = profile.embeddings.astype(np.float64)
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    _, singular, vt = np.linalg.svd(centred, full_matrices=False)
    k = max(1, min(components, len(embeddings) - 1, embeddings.shape[1]))
    variance = singular**2
    kept = float(variance[:k].sum() / variance.sum()) if variance.sum() > 0 else 1.0
    reference = Reference(
        stats={name: values.astype(np.float32) for name, values in profile.stats.items()},
        embeddings=np.zeros((0, k), np.float32),
        pca_mean=mean.astype(np.float32),
        pca_components=vt[:k].astype(np.float32),
        explained_variance=kept,
        summary=list(profile.summary),
        meta={**meta, "count": len(profile.embeddings)},
    )
    reference.embeddings = reference.project(profile.embeddings)
    return reference
