"""The report's view of the trust checks: verdict rows, findings in words, and figures.

Everything is read from :class:`auditor.measure.Trust` records; nothing here runs the
model.
"""

from __future__ import annotations

from dataclasses import dataclass

import matplotlib
import numpy as np
import pandas as pd
import torch

from auditor.explain import METHODS
from auditor.explain.postprocess import minmax
from auditor.measure import Trust
from auditor.report.figures import COLORMAP, figure_uri, styled_figure

__all__ = ["GroupRow", "TrustRow", "TrustView", "trust_view"]

_FAIL = "fails"


@dataclass(frozen=True)
class TrustRow:
    """One method's line of the verdict table, in words."""

    key: str
    title: str
    randomisation: str
    faithfulness: str
    stability: str
    localisation: str
    gini: float
    verdict: str
    level: str  # "bad", "weak" or "good": the row's colour


@dataclass(frozen=True)
class GroupRow:
    """One line of "Where the evidence lies", in words."""

    label: str
    n: int
    outside: str  # share of evidence outside the region, with its CI
    area: str  # share of the image outside the region
    region: str  # where the outside evidence concentrates
    flagged: bool


@dataclass(frozen=True)
class TrustView:
    """What the report shows about the trust checks."""

    rows: tuple[TrustRow, ...]
    flagged: tuple[str, ...]  # titles of the methods failing randomisation
    readable: tuple[str, ...]  # titles of the methods judged readable
    findings: tuple[str, ...]  # shortcut findings in words
    shortcut_methods: tuple[str, ...]
    groups: tuple[GroupRow, ...]
    not_measured: tuple[tuple[str, str], ...]
    steps: tuple[str, ...]
    example_index: int | None
    n_images: int
    n_cases: int
    randomisation_figure: str
    maps_figure: str
    curves_figure: str
    agreement_figure: str
    mean_maps_figure: str
    settings: dict[str, float]
    seconds: float


def _title(key: str) -> str:
    return METHODS[key].title if key in METHODS else key


def _cells(row: pd.Series) -> tuple[str, str, str, str]:
    if row["randomisation"] == "not measured":
        randomisation = "not measured"
    else:
        randomisation = (
            f"{row['randomisation']} (ρ = {row['randomisation_spearman']:.2f}, "
            f"SSIM {row['randomisation_ssim']:.2f})"
        )
    if row["faithfulness"] == "not measured":
        faithfulness = "not measured"
    else:
        faithfulness = (
            f"{row['faithfulness']}: gain {row['faithfulness_gain']:+.3f} "
            f"({row['faithfulness_gain_low']:+.3f} to {row['faithfulness_gain_high']:+.3f})"
        )
    stability = (
        "not measured"
        if row["stability"] == "not measured"
        else f"{row['stability']} ({row['max_sensitivity']:.2f})"
    )
    localisation = (
        "no masks"
        if row["localisation"] == "not measured"
        else (
            f"{row['localisation']}: {row['energy_in_mask']:.0%} of evidence in "
            f"{row['mask_area']:.0%} of the image; pointing game {row['pointing_game']:.0%}"
        )
    )
    return randomisation, faithfulness, stability, localisation


def _level(row: pd.Series) -> str:
    if row["randomisation"] == _FAIL:
        return "bad"
    if row["verdict"].startswith("Can be read"):
        return "good"
    return "weak"


def _randomisation_figure(trust: Trust, methods: tuple[str, ...]) -> str:
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
                    label=_title(key),
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


def _maps_figure(trust: Trust, methods: tuple[str, ...]) -> str:
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
                    ax.set_title(_title(key), fontsize=5, rotation=35, ha="left", loc="left")
                if j == 0:
                    ax.set_ylabel(step, fontsize=5.5, rotation=0, ha="right", va="center")
        figure.subplots_adjust(
            wspace=0.05, hspace=0.08, left=0.14, right=0.99, top=0.86, bottom=0.01
        )
        return figure_uri(figure, dpi=130)


def _curves_figure(trust: Trust, methods: tuple[str, ...]) -> str:
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
            ax.set_title(_title(shown[n]), fontsize=6.5)
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


def _agreement_figure(agreement: pd.DataFrame) -> str:
    if agreement.empty or agreement.isna().all().all():
        return ""
    titles = [_title(k) for k in agreement.index]
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


def _mean_maps_figure(trust: Trust) -> str:
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
                    ax.set_title(_title(key), fontsize=6.5)
                if j == 0:
                    ax.set_ylabel(f"{group.label}\n(n = {group.n})", fontsize=6)
        figure.tight_layout(pad=0.3)
        return figure_uri(figure, dpi=130)


def trust_view(trust: Trust) -> TrustView:
    """Everything the report's trust section and summary show."""
    verdicts = trust.verdicts
    methods = tuple(str(k) for k in verdicts["method"])
    rows = []
    for _, row in verdicts.iterrows():
        randomisation, faithfulness, stability, localisation = _cells(row)
        rows.append(
            TrustRow(
                key=str(row["method"]),
                title=_title(str(row["method"])),
                randomisation=randomisation,
                faithfulness=faithfulness,
                stability=stability,
                localisation=localisation,
                gini=float(row["gini"]),
                verdict=str(row["verdict"]),
                level=_level(row),
            )
        )
    shortcuts = trust.shortcuts
    groups = tuple(
        GroupRow(
            label=g.label,
            n=g.n,
            outside=f"{g.outside[0]:.0%} ({g.outside[1]:.0%}–{g.outside[2]:.0%})",
            area=f"{g.outside_area:.0%}",
            region=(
                f"{g.region}: {g.region_share:.0%} of it in {g.region_area:.0%} of the area "
                f"({g.concentration:.1f}×)"
            ),
            flagged=g.flagged,
        )
        for g in (shortcuts.groups if shortcuts else ())
    )
    records = trust.records
    return TrustView(
        rows=tuple(rows),
        flagged=tuple(r.title for r in rows if r.level == "bad"),
        readable=tuple(r.title for r in rows if r.level == "good"),
        findings=tuple(g.sentence() for g in shortcuts.flagged) if shortcuts else (),
        shortcut_methods=tuple(_title(k) for k in shortcuts.methods) if shortcuts else (),
        groups=groups,
        not_measured=tuple(trust.not_measured.items()),
        steps=tuple(step.label for step in trust.steps),
        example_index=trust.example_index,
        n_images=int(records[records["measure"] == "max_sensitivity"]["index"].nunique()),
        n_cases=len(records[records["measure"] == "gini"].drop_duplicates(["index", "role"])),
        randomisation_figure=_randomisation_figure(trust, methods) if trust.steps else "",
        maps_figure=_maps_figure(trust, methods),
        curves_figure=_curves_figure(trust, methods),
        agreement_figure=_agreement_figure(trust.agreement),
        mean_maps_figure=_mean_maps_figure(trust),
        settings={k: float(v) for k, v in vars(trust.settings).items()},
        seconds=sum(trust.seconds.values()),
    )
