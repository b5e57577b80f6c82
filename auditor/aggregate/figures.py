"""Figures of the report: matplotlib (Agg), returned as PNG data URIs, closed after use.

Figures are drawn from records that earlier stages computed; nothing here runs the
model. Style is set inside a context manager so the caller's matplotlib settings are
left alone.
"""

from __future__ import annotations

import base64
import functools
import io
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.typing import ArrayLike, NDArray
from PIL import Image

from auditor.explain.postprocess import minmax
from auditor.metrics import CalibrationBin
from auditor.report.format import shorten

__all__ = [
    "COLORMAP",
    "MAX_FILTERS",
    "activation_tile",
    "calibration_figure",
    "colorbar_figure",
    "confusion_figure",
    "figure_uri",
    "filter_grid",
    "image_tile",
    "overlay_tile",
    "panels",
    "styled_figure",
]

COLORMAP = "inferno"
_LABEL_CHARACTERS = 24  # a class name on a figure's axis; the tables show more
MAX_FILTERS = 64
"""First-convolution filters shown at most in the filter grid."""
_LABELLED_CELLS = 30
_LABELLED_TICKS = 60
_STYLE: dict[str, object] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "font.family": "DejaVu Sans",
    "figure.dpi": 100,
    "text.parse_math": False,  # class names and labels are drawn literally ("$x$" too)
}


@contextmanager
def styled_figure(width: float, height: float) -> Iterator[Figure]:
    with plt.rc_context(_STYLE):  # type: ignore[arg-type]
        figure = plt.figure(figsize=(width, height))
        try:
            yield figure
        finally:
            plt.close(figure)


@contextmanager
def panels(n: int) -> Iterator[tuple[Figure, list[Axes]]]:
    """A figure of ``n`` small panels, three to a row (one per label, say)."""
    columns = min(3, n)
    lines = -(-n // columns)
    with styled_figure(2.3 * columns, 2.2 * lines) as figure:
        yield figure, [figure.add_subplot(lines, columns, k + 1) for k in range(n)]


def interval_errors(values: ArrayLike, lows: ArrayLike, highs: ArrayLike) -> NDArray[np.float64]:
    """``(2, N)`` distances from each value down to its interval's low end and up to its
    high end, as matplotlib's ``errorbar`` takes them: never negative (an interval bound
    computed apart, such as Wilson's at 12 of 12, can round a hair past its value, which
    errorbar refuses) and 0 where a bound is missing (NaN)."""
    value, low, high = (np.asarray(v, dtype=np.float64) for v in (values, lows, highs))
    return np.maximum(np.nan_to_num(np.vstack([value - low, high - value])), 0.0)


def figure_uri(figure: Figure, dpi: int = 150) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def confusion_figure(matrix: NDArray[np.int64], classes: Sequence[str]) -> str:
    """Confusion matrix: colour = share of the true class; counts written up to 30 classes.

    The figure's size is capped, so even a few hundred classes render (as a heat map
    without cell labels; tick labels only up to 60 classes); the report draws it only up
    to ``report-classes`` classes.
    """
    counts = np.asarray(matrix, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    n = len(classes)
    size = min(1.6 + 0.45 * n, 7.5)
    with styled_figure(size + 0.8, size) as figure:
        axes = figure.add_subplot()
        image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        if n <= _LABELLED_CELLS:
            for (row, col), count in np.ndenumerate(counts):
                colour = "white" if shares[row, col] > 0.6 else "black"
                axes.text(col, row, f"{int(count)}", ha="center", va="center", color=colour)
        if n <= _LABELLED_TICKS:
            ticks = range(n)
            labels = [shorten(name, _LABEL_CHARACTERS) for name in classes]
            axes.set_xticks(ticks, labels=labels, rotation=45, ha="right")
            axes.set_yticks(ticks, labels=labels)
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of true class")
        return figure_uri(figure, dpi=150 if n <= _LABELLED_CELLS else 100)


def calibration_figure(bins: Sequence[CalibrationBin]) -> str:
    """Reliability diagram (accuracy against confidence per bin) and confidence histogram."""
    lower = np.array([b.lower for b in bins])
    width = np.array([b.upper - b.lower for b in bins])
    accuracy = np.array([b.accuracy for b in bins])
    counts = np.array([b.count for b in bins])
    with styled_figure(6.4, 2.8) as figure:
        left, right = figure.subplots(1, 2)
        filled = counts > 0
        left.bar(
            lower[filled],
            accuracy[filled],
            width=width[filled],
            align="edge",
            color="#4C72B0",
            edgecolor="white",
            label="accuracy in bin",
        )
        left.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="perfect calibration")
        left.set_xlim(0, 1)
        left.set_ylim(0, 1)
        left.set_xlabel("confidence (top class probability)")
        left.set_ylabel("accuracy")
        left.set_title("Reliability diagram")
        left.legend(loc="upper left", frameon=False)
        right.bar(lower, counts, width=width, align="edge", color="#DD8452", edgecolor="white")
        right.set_xlim(0, 1)
        right.set_xlabel("confidence (top class probability)")
        right.set_ylabel("images")
        right.set_title("Confidence histogram")
        figure.tight_layout()
        return figure_uri(figure)


def _png_uri(array: np.ndarray) -> str:
    """``(H, W, 3)`` uint8 → PNG data URI (PIL: milliseconds, unlike a matplotlib figure)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _upscale(array: np.ndarray, scale: int) -> np.ndarray:
    return array.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else array


def _display_scale(height: int) -> int:
    """Integer upscale so small images stay crisp in the PDF (nearest neighbour)."""
    return max(1, 192 // max(height, 1))


def image_tile(image: np.ndarray) -> str:
    """``(H, W, C)`` float image in [0, 1], C = 1 or 3, as a PNG data URI."""
    picture = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    pixels = (np.clip(picture, 0, 1) * 255).round().astype(np.uint8)
    return _png_uri(_upscale(pixels, _display_scale(pixels.shape[0])))


def overlay_tile(image: np.ndarray, values: np.ndarray, alpha: float = 0.55) -> str:
    """A heat map over its image, as a PNG data URI.

    Args:
        image: ``(H, W, C)`` float in [0, 1], C = 1 or 3.
        values: ``(H, W)`` map already min-max normalised to [0, 1].
        alpha: Opacity of the heat map.
    """
    picture = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    heat = matplotlib.colormaps[COLORMAP](np.clip(values, 0, 1))[..., :3]
    blended = (1 - alpha) * np.clip(picture, 0, 1) + alpha * heat
    pixels = (blended * 255).round().astype(np.uint8)
    return _png_uri(_upscale(pixels, _display_scale(pixels.shape[0])))


@functools.cache
def colorbar_figure() -> str:
    """The shared colour bar of every heat map (0 = least, 1 = most attribution)."""
    with styled_figure(3.2, 0.45) as figure:
        axes = figure.add_axes((0.05, 0.55, 0.9, 0.35))
        gradient = np.linspace(0, 1, 256)[None, :]
        axes.imshow(gradient, aspect="auto", cmap=COLORMAP, extent=(0, 1, 0, 1))
        axes.set_yticks([])
        axes.set_xticks([0, 0.5, 1], labels=["0 (least)", "0.5", "1 (most)"])
        return figure_uri(figure)


def filter_grid(filters: np.ndarray, limit: int = MAX_FILTERS) -> str:
    """First-convolution filters ``(N, k, k, C)`` in [0, 1] as one PNG grid (at most ``limit``).

    Each filter is a block of pixels (nearest-neighbour upscaling), separated by a
    1-pixel white gap; grayscale filters are shown in gray.
    """
    shown = filters[:limit]
    n, size = len(shown), shown.shape[1]
    columns = min(16, max(1, 2 * math.isqrt(n)))
    rows = -(-n // columns)
    scale = max(1, 24 // size)
    cell = size * scale + 1
    grid = np.full((rows * cell + 1, columns * cell + 1, 3), 255, np.uint8)
    for i, kernel in enumerate(shown):
        tile = np.repeat(kernel, 3, axis=2) if kernel.shape[2] == 1 else kernel
        pixels = _upscale((np.clip(tile, 0, 1) * 255).round().astype(np.uint8), scale)
        top, left = 1 + (i // columns) * cell, 1 + (i % columns) * cell
        grid[top : top + size * scale, left : left + size * scale] = pixels
    return _png_uri(grid)


def activation_tile(values: np.ndarray) -> str:
    """One ``(H, W)`` activation map, min-max scaled, in the viridis colour map (PNG URI)."""
    scaled = minmax(torch.from_numpy(values)[None])[0].numpy()
    pixels = (matplotlib.colormaps["viridis"](scaled)[..., :3] * 255).round().astype(np.uint8)
    return _png_uri(_upscale(pixels, max(1, 96 // max(values.shape[0], 1))))
