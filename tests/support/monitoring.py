"""Made-up monitoring data: a drift reference and what serving replicas log, seeded."""

from __future__ import annotations

import numpy as np

from fovea.tasks.reference import STATISTICS, Reference

NAMES = ["cat", "dog"]
K = 8  # embedding components


def reference(n: int = 600) -> Reference:
    rng = np.random.default_rng(0)
    return Reference(
        stats={name: rng.normal(0.5, 0.1, n).astype(np.float32) for name in STATISTICS},
        embeddings=rng.normal(0, 1, (n, K)).astype(np.float32),
        pca_mean=np.zeros(16, np.float32),
        pca_components=np.eye(K, 16, dtype=np.float32),
        explained_variance=0.9,
        summary=summaries(rng, n),
        meta={"task": "classification", "class_names": NAMES},
    )


def summaries(rng: np.random.Generator, n: int) -> list[dict]:
    classes = rng.choice(2, size=n, p=[0.6, 0.4])
    confidence = rng.uniform(0.5, 1.0, n)
    return [
        {"class_id": int(k), "label": NAMES[k], "confidence": float(c), "entropy": float(1 - c)}
        for k, c in zip(classes, confidence, strict=True)
    ]


def replica_results(n: int, *, seed: int, brightness: float = 0.5) -> list[dict]:
    """What a serving replica returns for n images (the log part of each)."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(0, 1, (n, K)).astype(np.float16)
    rows = summaries(rng, n)
    results = []
    for i in range(n):
        stats = {name: float(rng.normal(0.5, 0.1)) for name in STATISTICS}
        stats["brightness"] = float(rng.normal(brightness, 0.1))
        log = {"sha256": f"{seed:08d}{i:056d}", "stats": stats, "summary": rows[i],
               "embedding": embeddings[i].tobytes(), "embedding_dim": K}  # fmt: skip
        results.append({"file": f"img{i}.png", "ok": True, "log": log})
    results.append({"file": "broken.jpg", "ok": False, "error": "broken.jpg: not an image"})
    return results
