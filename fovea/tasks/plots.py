"""PNG figures for runs: training curves, confusion matrix, image grids.

Figures are built with `matplotlib.figure.Figure` and rendered by the Agg canvas directly,
never through pyplot: no global figure registry, no GUI backend, safe in worker threads.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

CORRECT_COLOR = "#1a9850"
WRONG_COLOR = "#d73027"


def training_curves_png(history: Sequence[Mapping[str, float]]) -> bytes:
    """Loss curves (train and validation) and validation metric curves against epoch.

    Reads the engine's history rows: "epoch", "train/<loss name>", "val/loss" and
    "val/<metric>"; per-class metrics ("val/f1/<class>") are left out to keep it legible.
    """
    fig = Figure(figsize=(11, 4), layout="constrained")
    loss_ax, metric_ax = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    keys = sorted({key for row in history for key in row})
    loss_keys = [k for k in keys if k.startswith("train/") or k == "val/loss"]
    metric_keys = [k for k in keys if k.startswith("val/") and k.count("/") == 1]
    metric_keys = [k for k in metric_keys if k != "val/loss"]
    for ax, plotted, title in (
        (loss_ax, loss_keys, "loss"),
        (metric_ax, metric_keys, "validation metrics"),
    ):
        for key in plotted:
            values = [row.get(key, math.nan) for row in history]
            ax.plot(epochs, values, marker="o", markersize=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if plotted:
            ax.legend(fontsize="small")
    return _png(fig)


def confusion_matrix_png(cm: np.ndarray | Sequence[Sequence[int]], class_names: list[str]) -> bytes:
    """Counts [true, predicted]; colour is the row-normalised rate (recall on the diagonal)."""
    counts = np.asarray(cm, dtype=np.int64)
    n = len(class_names)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.45 * n, 24)
    fig = Figure(figsize=(side, side * 0.9))  # no layout engine: it doubles the render time
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="fraction of true class")
    ax.set_xticks(range(n), class_names, rotation=90 if n > 8 else 0, fontsize="small")
    ax.set_yticks(range(n), class_names, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:  # beyond that the numbers overlap
        for row in range(n):
            for col in range(n):
                color = "white" if rates[row, col] > 0.5 else "black"
                ax.text(col, row, str(counts[row, col]), ha="center", va="center", color=color)
    ax.set_title("confusion matrix")
    return _png(fig, tight=True)  # trims or extends the canvas to the (long) class names


def image_grid_png(
    images: np.ndarray, *, titles: Sequence[str], colors: Sequence[str], columns: int = 4
) -> bytes:
    """uint8 [N, H, W, 3] images (same size) in a grid, each titled in its colour.

    Drawn as one mosaic in one Axes: 16 separate Axes under a layout engine are slow enough
    to dominate a small model's epoch.
    """
    count, height, width = images.shape[:3]
    rows = max(1, math.ceil(count / columns))
    gap, title_room = max(2, width // 16), max(6, height // 4)
    cell_h, cell_w = height + title_room, width + gap
    mosaic = np.full((rows * cell_h, columns * cell_w, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        top, left = (i // columns) * cell_h + title_room, (i % columns) * cell_w
        mosaic[top : top + height, left : left + width] = image
    fig = Figure(figsize=(2.4 * columns, 2.4 * rows * cell_h / cell_w))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for i, (title, color) in enumerate(zip(titles, colors, strict=True)):
        x, y = (i % columns) * cell_w + width / 2, (i // columns) * cell_h + title_room / 2
        ax.text(x, y, title, color=color, ha="center", va="center", fontsize="small")
    return _png(fig)


def bar_chart_png(
    values: Mapping[str, float], *, title: str, xlabel: str, xlim: tuple[float, float] = (0, 1)
) -> bytes:
    """One horizontal bar per name (per-class IoU, AP, ...); NaN values are shown as "n/a"."""
    names = list(values)
    numbers = [float(values[n]) for n in names]
    fig = Figure(figsize=(6, min(2 + 0.3 * len(names), 24)))
    ax = fig.subplots()
    positions = np.arange(len(names))
    ax.barh(positions, np.nan_to_num(numbers), color="#4575b4")
    span = xlim[1] - xlim[0]
    for y, value in zip(positions, numbers, strict=True):
        label = "n/a" if math.isnan(value) else f"{value:.2f}"
        x = xlim[0] if math.isnan(value) else min(value, xlim[1] - 0.12 * span)
        ax.text(x + 0.01 * span, y, label, va="center", fontsize="small")
    ax.set_yticks(positions, names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return _png(fig, tight=True)


def _png(fig: Figure, *, tight: bool = False) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight" if tight else None)
    return buffer.getvalue()
