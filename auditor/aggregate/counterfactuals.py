"""Counterfactual explanations, for the report: how often each kind changes the call,
whether the changes remove an artefact concept, and the images. The sentences' figures
are counts over ``counterfactuals.csv`` (:mod:`auditor.counterfactual.files`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from auditor.aggregate.figures import image_tile, overlay_tile
from auditor.aggregate.inputs import AuditInputs
from auditor.counterfactual.files import (
    REMOVED,
    ArtifactCount,
    KindCount,
    RegionCount,
    artifact_counts,
    kind_counts,
    region_counts,
)
from auditor.counterfactual.stage import Counterfactuals, Shown
from auditor.report.format import whole_percent

__all__ = [
    "CounterfactualView",
    "counterfactual_artifacts",
    "counterfactual_findings",
    "counterfactual_view",
]

SHOWN = 8
"""Cases shown with their counterfactual images."""


@dataclass(frozen=True)
class CounterfactualTile:
    image: str
    caption: str


@dataclass(frozen=True)
class CounterfactualCase:
    path: str
    call: str
    tiles: tuple[CounterfactualTile, ...]


@dataclass(frozen=True)
class CounterfactualView:
    """The counterfactual sections (main body and the appendix of images).

    Attributes:
        sentences: How the segment counterfactuals came out, in words (main body).
        details: How the gradient ones came out and the shortcut regions (appendix).
        findings: Artefact concepts whose removal changes misclassified calls (page one).
        kinds, artifacts: The counts behind them.
        cases: The first cases' images: the case, the segment counterfactual, the removed
            segments, the gradient counterfactual, its change.
        multi_label: Whether each search flips one label of a multi-label model.
    """

    fill: str
    settings: str
    sentences: tuple[str, ...]
    details: tuple[str, ...]
    findings: tuple[str, ...]
    kinds: tuple[KindCount, ...]
    artifacts: tuple[ArtifactCount, ...]
    removed_share: float
    cases: tuple[CounterfactualCase, ...]
    passes: int
    seconds: float
    multi_label: bool


def _sentence(k: KindCount, multi_label: bool) -> str:
    name = "Segment" if k.kind == "segments" else "Gradient"
    if k.kind == "segments":
        size = f"a mean of {k.segments:.1f} segments, {whole_percent(k.pixels)} of the pixels"
    else:
        size = f"a mean absolute change of {k.l1:.4f} of the pixel range"
    changed = f"{size}, " if k.valid else ""
    if multi_label:
        return (
            f"{name} counterfactuals flip the label searched (see above) in {k.valid} of the "
            f"{k.searched} searches ({k.misclassified_valid} of the {k.misclassified} wrong "
            f"calls of misclassified images; {changed}{k.passes:.0f} forward passes per "
            f"search)."
        )
    return (
        f"{name} counterfactuals change the call of {k.valid} of the {k.searched} cases "
        f"({k.misclassified_valid} of the {k.misclassified} misclassified; {changed}"
        f"{k.passes:.0f} forward passes per case)."
    )


def _left_out(result: Counterfactuals) -> tuple[str, ...]:
    """The wrong calls not searched, when any was left out."""
    if not result.left_out:
        return ()
    most = result.settings.counterfactual_labels
    calls = "wrong calls of misclassified images were"
    if result.left_out == 1:
        calls = "wrong call of a misclassified image was"
    return (
        f"{result.left_out:,} {calls} not searched: only each image's {most} most confident "
        f"are (counterfactual-labels).",
    )


def _region_sentence(r: RegionCount) -> str:
    name = "segment" if r.kind == "segments" else "gradient"
    return (
        f"{r.inside} of the {r.valid} valid {name} counterfactuals of cases in a flagged "
        f"shortcut group change mostly ({whole_percent(REMOVED)} or more) the region where "
        f"the evidence concentrates ({', '.join(r.regions)})."
    )


def _flipped(result: Counterfactuals, concept: str) -> str:
    """A multi-label model's labels whose wrong calls removing ``concept`` flips, in
    words ("" for a single-label model)."""
    frame = result.frame
    if "flipped_label" not in frame.columns:
        return ""
    found = (frame["kind"] == "segments") & (frame["role"] == "misclassified")
    found &= frame["valid"].astype(bool) & (frame[f"covers_{concept}"] >= REMOVED)
    return ", ".join(sorted(set(frame.loc[found, "flipped_label"])))


def counterfactual_findings(result: Counterfactuals | None) -> tuple[str, ...]:
    """For each artefact concept: how many misclassified images that show it have a
    segment counterfactual that removes it (when any has); a multi-label model's flip one
    wrong label call each, named."""
    if result is None:
        return ()
    sentences = []
    for concept, removed, shown in counterfactual_artifacts(result):
        labels = _flipped(result, concept)
        change = f"flips a wrong call of {labels} on" if labels else "changes the call of"
        sentences.append(
            f"Removing the artefact concept {concept} {change} {removed} of the {shown} "
            f"misclassified images that show it and have a segment counterfactual: the "
            f"smallest change found covers at least {whole_percent(REMOVED)} of it."
        )
    return tuple(sentences)


def _outcome(
    kind: str, valid: bool, new_class: int, probability: float, shown: Shown,
    classes: tuple[str, ...],
) -> str:  # fmt: skip
    """The new call and its probability (a multi-label model's: the label's)."""
    if not valid:
        return f"{kind}: none found"
    if shown.flip is not None:
        name = shown.flip.name
        return f"{kind}: → {shown.flip.calls[new_class]}, p({name}) {probability:.2f}"
    return f"{kind}: → {classes[new_class]} {probability:.2f}"


def _tiles(shown: Shown, classes: tuple[str, ...]) -> tuple[CounterfactualTile, ...]:
    """The case, then per kind the counterfactual and where it changed the image."""
    image = shown.image.numpy()
    tiles = [CounterfactualTile(image_tile(image), "the case")]
    if (s := shown.segments) is not None:
        removed = s.mask.numpy().astype(np.float32)
        tiles += [
            CounterfactualTile(image_tile(s.image.permute(1, 2, 0).numpy()),
                               _outcome("segments", s.valid, s.new_class, s.probability, shown,
                                        classes)),
            CounterfactualTile(overlay_tile(image, removed),
                               f"{len(s.segments)} removed, {s.passes} passes"),
        ]  # fmt: skip
    if (g := shown.gradient) is not None:
        change = (g.image - shown.image.permute(2, 0, 1)).abs().amax(0).numpy()
        tiles += [
            CounterfactualTile(image_tile(g.image.permute(1, 2, 0).numpy()),
                               _outcome("gradient", g.valid, g.new_class, g.probability, shown,
                                        classes)),
            CounterfactualTile(overlay_tile(image, change / max(float(change.max()), 1e-6)),
                               f"largest change {g.largest:.3f}"),
        ]  # fmt: skip
    return tuple(tiles)


def counterfactual_artifacts(result: Counterfactuals | None) -> tuple[tuple[str, int, int], ...]:
    """``(concept, removed, shown)`` for the misclassified images behind each finding."""
    if result is None:
        return ()
    return tuple(
        (a.concept, a.misclassified_removed, a.misclassified_shown)
        for a in artifact_counts(result)
        if a.kind == "segments" and a.misclassified_removed
    )


def _cases(inputs: AuditInputs, result: Counterfactuals) -> tuple[CounterfactualCase, ...]:
    rows = inputs.evaluation.predictions.set_index("index")
    return tuple(
        CounterfactualCase(
            str(rows.at[shown.index, "path"]),
            f"{rows.at[shown.index, 'label']!s} → {rows.at[shown.index, 'prediction']!s}"
            + (f"; flipping {shown.flip.name}" if shown.flip else ""),
            _tiles(shown, inputs.dataset.classes),
        )
        for shown in result.shown[:SHOWN]
    )


def counterfactual_view(inputs: AuditInputs) -> CounterfactualView | None:
    result = inputs.counterfactuals
    if result is None:
        return None
    s = result.settings
    settings = (
        f"at most {s.counterfactual_segments} segments and {s.counterfactual_passes:,} passes "
        f"per search; gradient: {s.wachter_steps} Adam steps at {s.wachter_lr:g}, L1 weight "
        f"{s.wachter_l1:g}, total-variation weight {s.wachter_tv:g}"
    )
    kinds = kind_counts(result.frame)
    multi = inputs.dataset.multi_label
    return CounterfactualView(
        fill=result.fill,
        settings=settings,
        sentences=tuple(_sentence(k, multi) for k in kinds if k.kind == "segments")
        + _left_out(result),
        details=tuple(_sentence(k, multi) for k in kinds if k.kind != "segments")
        + tuple(_region_sentence(r) for r in region_counts(result.frame)),
        findings=counterfactual_findings(result),
        kinds=kinds,
        artifacts=artifact_counts(result),
        removed_share=REMOVED,
        cases=_cases(inputs, result),
        passes=result.passes,
        seconds=result.seconds,
        multi_label=multi,
    )
