"""The trust section's figures: randomisation cascade, curves, agreement and mean maps.

Drawn from :class:`auditor.measure.Trust` records (matplotlib, Agg; PNG data URIs);
each returns "" when there is nothing to draw.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import torch

from auditor.aggregate.figures import COLORMAP, figure_uri, styled_figure
from auditor.explain import METHODS
from auditor.explain.postprocess import minmax
from auditor.measure import Trust

__all__ = [
    "agreement_figure",
    "curves_figure",
    "maps_figure",
    "mean_maps_figure",
    "method_title",
    "randomisation_figure",
]


def method_title(key: str) -> str:
    """A method's title, or the key itself for a name that is not a registered method."""
    return METHODS[key].title if key in METHODS else key


def randomisation_figure(trust: Trust, methods: tuple[str, ...]) -> str:
    """Mean rank correlation and SSIM with the original maps along the cascade."""
    records = trust.records[trust.records["status"] == "ok"]
    labels = ["none", *(step.label for step in trust.steps)]
    colours = matplotlib.colormaps["tab20"]
    with styled_figure(7.2, 2.9) as figure:
        axes = figure.subplots(1, 2)
        for panel, (measure, name) in enumerate(
            (("spearman", "rank correlation"), ("ssim", "SSIM"))
        ):
            ax = axes[panel]
            for n, key in enumerate(methods):
                chosen = records[(records["method"] == key) & (records["measure"] == measure)]
                means = chosen.groupby("step")["value"].mean()
                values = [1.0, *(means.get(step.label, np.nan) for step in trust.steps)]
                ax.plot(
                    range(len(labels)),
                    values,
                    marker="o",
                    markersize=2.5,
                    lw=1,
                    color=colours(n % 20),
                    label=method_title(key),
                )
            if measure == "spearman":
                ax.axhline(trust.settings.randomisation_threshold, color="0.4", ls="--", lw=0.8)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel(f"{name} with the original map")
            ax.set_xlabel("randomised down to")
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=5.5, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
        figure.tight_layout()
        return figure_uri(figure)


def _tile(ax: object, values: np.ndarray) -> None:
    scaled = minmax(torch.from_numpy(values)[None])[0]
    ax.imshow(scaled.numpy(), cmap=COLORMAP, vmin=0, vmax=1)  # type: ignore[attr-defined]
    ax.set_xticks([])  # type: ignore[attr-defined]
    ax.set_yticks([])  # type: ignore[attr-defined]


def maps_figure(trust: Trust, methods: tuple[str, ...]) -> str:
    """The example image's maps at each cascade step, one column per method; "" if none."""
    if not trust.example:
        return ""
    steps = ["original", *(step.label for step in trust.steps)]
    shown = [k for k in methods if ("original", k) in trust.example]
    with styled_figure(0.56 * len(shown) + 0.9, 0.62 * len(steps) + 0.5) as figure:
        axes = np.atleast_2d(figure.subplots(len(steps), len(shown), squeeze=False))
        for i, step in enumerate(steps):
            for j, key in enumerate(shown):
                ax = axes[i, j]
                found = trust.example.get((step, key))
                if found is None:
                    ax.axis("off")
                else:
                    _tile(ax, found)
                if i == 0:
                    ax.set_title(method_title(key), fontsize=5, rotation=35, ha="left", loc="left")
                if j == 0:
                    ax.set_ylabel(step, fontsize=5.5, rotation=0, ha="right", va="center")
        figure.subplots_adjust(
            wspace=0.05, hspace=0.08, left=0.14, right=0.99, top=0.86, bottom=0.01
        )
        return figure_uri(figure, dpi=130)


def curves_figure(trust: Trust, methods: tuple[str, ...]) -> str:
    """Mean deletion and insertion curves per method against the random order's; "" if none."""
    shown = [k for k in methods if k in trust.curves]
    if not shown or "random" not in trust.curves:
        return ""
    columns = 5
    rows = -(-len(shown) // columns)
    random_deletion, random_insertion = trust.curves["random"]
    x = np.linspace(0, 1, len(random_deletion))
    with styled_figure(7.2, 1.45 * rows + 0.3) as figure:
        axes = np.atleast_2d(figure.subplots(rows, columns, squeeze=False))
        for n, ax in enumerate(axes.flat):
            if n >= len(shown):
                ax.axis("off")
                continue
            deletion, insertion = trust.curves[shown[n]]
            ax.plot(x, deletion, color="tab:red", lw=1.1, label="deletion")
            ax.plot(x, insertion, color="tab:blue", lw=1.1, label="insertion")
            ax.plot(x, random_deletion, color="tab:red", lw=0.8, ls=":", label="random order")
            ax.plot(x, random_insertion, color="tab:blue", lw=0.8, ls=":")
            ax.set_title(method_title(shown[n]), fontsize=6.5)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=5.5)
            ax.grid(alpha=0.3)
            if n % columns == 0:
                ax.set_ylabel("probability", fontsize=6)
            if n >= len(shown) - columns:
                ax.set_xlabel("share of pixels", fontsize=6)
        axes.flat[0].legend(fontsize=5, frameon=False, loc="lower left")
        figure.tight_layout(pad=0.4)
        return figure_uri(figure)


def agreement_figure(agreement: pd.DataFrame) -> str:
    """Methods × methods mean rank correlation of their maps; "" if nothing was compared."""
    if agreement.empty or agreement.isna().all().all():
        return ""
    titles = [method_title(k) for k in agreement.index]
    n = len(titles)
    with styled_figure(0.36 * n + 2.0, 0.33 * n + 1.3) as figure:
        ax = figure.subplots()
        matrix = agreement.to_numpy(dtype=np.float64)
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_xticks(range(n), titles, rotation=45, ha="right", fontsize=6)
        ax.set_yticks(range(n), titles, fontsize=6)
        for i in range(n):
            for j in range(n):
                value = float(matrix[i, j])
                if np.isfinite(value):
                    ax.text(
                        j,
                        i,
                        f"{value:.2f}",
                        ha="center",
                        va="center",
                        fontsize=4.8,
                        color="white" if abs(value) > 0.6 else "black",
                    )
        figure.colorbar(image, ax=ax, fraction=0.04, pad=0.02, label="mean rank correlation")
        figure.tight_layout()
        return figure_uri(figure)


def mean_maps_figure(trust: Trust) -> str:
    """Mean map per shortcut group for the first four methods, masks in cyan; "" if none."""
    shortcuts = trust.shortcuts
    if shortcuts is None or not shortcuts.groups:
        return ""
    methods = list(shortcuts.methods[:4])
    groups = shortcuts.groups
    with styled_figure(1.25 * len(methods) + 1.6, 1.2 * len(groups) + 0.4) as figure:
        axes = np.atleast_2d(figure.subplots(len(groups), len(methods), squeeze=False))
        for i, group in enumerate(groups):
            for j, key in enumerate(methods):
                ax = axes[i, j]
                found = group.mean_maps.get(key)
                if found is None:
                    ax.axis("off")
                    continue
                _tile(ax, found)
                ax.contour(group.mean_mask, levels=[0.5], colors="cyan", linewidths=0.7)
                if i == 0:
                    ax.set_title(method_title(key), fontsize=6.5)
                if j == 0:
                    ax.set_ylabel(f"{group.label}\n(n = {group.n})", fontsize=6)
        figure.tight_layout(pad=0.3)
        return figure_uri(figure, dpi=130)
