"""PNG pictures of a drift report: each statistic's reference-vs-live histogram, and the MMD
permutation distribution with the observed value. Rendered on request from the report's
stored numbers (matplotlib's Agg canvas, no pyplot: safe in server threads)."""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

REFERENCE_COLOUR, LIVE_COLOUR, ALERT_COLOUR = "#4575b4", "#d73027", "#fdae61"


def histograms_png(result: Mapping[str, Any]) -> bytes:
    """One panel per statistic: reference and live densities on shared bins, titled with
    the KS statistic and p-value, red when the test moved."""
    from matplotlib.figure import Figure

    histograms = result.get("histograms") or {}
    tests = {t["name"]: t for t in result.get("tests") or []}
    names = list(histograms)
    columns = 4
    rows = max(1, math.ceil(len(names) / columns))
    fig = Figure(figsize=(4 * columns, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        hist = histograms[name]
        edges = hist["edges"]
        widths = [b - a for a, b in itertools.pairwise(edges)]
        ax.bar(edges[:-1], hist["reference"], width=widths, align="edge", alpha=0.5,
               color=REFERENCE_COLOUR, label="reference")  # fmt: skip
        ax.bar(edges[:-1], hist["live"], width=widths, align="edge", alpha=0.5,
               color=LIVE_COLOUR, label="live")  # fmt: skip
        test = tests.get(f"statistics/{name}")
        title = name
        if test is not None:
            title += f"  KS {test['statistic']:.2f}, p={test['p_value']:.2g}"
        ax.set_title(
            title, fontsize=9, color=LIVE_COLOUR if test and test["significant"] else "black"
        )
        ax.tick_params(labelsize=7)
    for ax in axes[len(names) :]:
        ax.axis("off")
    if names:
        axes[0].legend(fontsize=7)
    return _png(fig)


def mmd_png(result: Mapping[str, Any]) -> bytes:
    """The permutation distribution of MMD^2 under "no drift", and the observed MMD^2."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2), layout="constrained")
    ax = fig.subplots()
    null = result.get("mmd_null") or []
    test = next((t for t in result.get("tests") or [] if t["method"] == "mmd"), None)
    if null:
        ax.hist(null, bins=30, color=REFERENCE_COLOUR, alpha=0.7, label="permutations (no drift)")
    if test is not None:
        colour = LIVE_COLOUR if test["significant"] else ALERT_COLOUR
        ax.axvline(test["statistic"], color=colour, linewidth=2,
                   label=f"observed, p={test['p_value']:.3g}")  # fmt: skip
    ax.set_xlabel("MMD² of the embeddings")
    ax.set_ylabel("count")
    ax.legend(fontsize=8)
    return _png(fig)


PLOTS: dict[str, Callable[[Mapping[str, Any]], bytes]] = {
    "histograms.png": histograms_png,
    "mmd.png": mmd_png,
}


def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)
    return buffer.getvalue()
