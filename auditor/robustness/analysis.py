"""How much the model's calls change under each perturbation, with paired intervals.

For each perturbation at each severity, against the clean predictions of the same
images: the change in accuracy, and for a positive class in sensitivity and
specificity at the operating threshold; the share of predictions that flip (the
predicted class changes); the mean change in confidence (the top probability). Every
interval is a percentile bootstrap that draws the same images (or patients) for the
clean and the perturbed call, so the change is paired, and all variants share the
draws (:func:`~auditor.resample.weighted_means`).

A perturbation is **fragile** at a severity when accuracy, sensitivity or specificity
falls by at least ``fragile-drop`` with the interval's upper end below zero and at least
``min-group-size`` images whose call turned wrong behind the fall (a few images near
the threshold can move a small group's rate by points: that is not a finding).

A multi-label model's accuracy is its subset accuracy (the called set equals the
labels), a flip a called set that changes, and every label's sensitivity and
specificity at its threshold is measured as a positive class's is, from the same
draws (``sensitivity of <label>``, ``specificity of <label>``); it has no confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray

from auditor.metrics import Estimate
from auditor.multilabel.evaluation import label_matrix
from auditor.resample import Resampling, weighted_means
from auditor.robustness.settings import RobustnessSettings
from auditor.robustness.stage import Perturbed, Variant, variants

__all__ = ["MEASURES", "LabelChange", "Robustness", "RobustnessRow", "robustness_summary"]

MEASURES = ("accuracy", "sensitivity", "specificity", "flips", "confidence")
"""What is measured per variant, in the order of a variant's columns (a multi-label
model's labels' sensitivities and specificities follow, two columns per label)."""

_MEASURED = MEASURES[:3]
"""The measures whose fall can make a variant fragile."""


@dataclass(frozen=True)
class RobustnessRow:
    """One perturbation at one severity against the clean run.

    Attributes:
        perturbation: Its key (``"jpeg"``); ``title`` and ``level`` as the report writes them.
        accuracy: The perturbed images' accuracy (the clean one is the robustness's).
        accuracy_change, sensitivity_change, specificity_change: Perturbed minus clean,
            with paired 95% intervals (``None`` without a positive class).
        flips: Share of images whose predicted class changed, with its interval.
        confidence_change: Mean change of the top probability.
        worse: Images whose call turned wrong: correct before and not after, positives
            no longer called, negatives newly called (accuracy, sensitivity, specificity).
        fragile: The measures that fell by the fragile criteria (empty: not fragile).
    """

    perturbation: str
    title: str
    severity: float
    level: str
    n: int
    accuracy: float
    accuracy_change: Estimate
    sensitivity_change: Estimate | None
    specificity_change: Estimate | None
    flips: Estimate
    confidence_change: Estimate
    worse: tuple[int, int, int]
    fragile: tuple[str, ...]
    labels: tuple[LabelChange, ...] = ()

    def change(self, measure: str) -> tuple[Estimate, int]:
        """A fragile measure's change and the images whose call turned wrong behind it:
        ``accuracy``, ``sensitivity``, ``specificity``, or a label's."""
        if measure in _MEASURED:
            change = getattr(self, f"{measure}_change")
            return change, self.worse[_MEASURED.index(measure)]
        for label in self.labels:
            for name, change, worse in label.measures():
                if name == measure:
                    return change, worse
        raise KeyError(measure)


@dataclass(frozen=True)
class LabelChange:
    """One label's sensitivity and specificity change under one variant, with the images
    whose call of it turned wrong (positives no longer called, negatives newly called)."""

    label: str
    sensitivity_change: Estimate
    specificity_change: Estimate
    worse: tuple[int, int]

    def measures(self) -> tuple[tuple[str, Estimate, int], ...]:
        """``(name, change, images turned wrong)`` of its two measures."""
        return (
            (f"sensitivity of {self.label}", self.sensitivity_change, self.worse[0]),
            (f"specificity of {self.label}", self.specificity_change, self.worse[1]),
        )


@dataclass(frozen=True)
class Robustness:
    """The robustness suite's results.

    Attributes:
        rows: One per variant, in the perturbations' order, mild to severe.
        images: Images run under every variant; ``unreadable`` chosen ones that were not.
        clean_accuracy: Accuracy of those images unperturbed.
        positive_class, threshold: How a call is made for sensitivity and specificity.
        min_images: Fewest images whose call turned wrong behind a fragile measure.
        resampled: What the bootstrap drew, in words.
        examples: ``(V, C, H, W)`` the first image under every variant, or ``None``.
        labels: A multi-label model's labels (each row's ``labels`` in this order).
    """

    settings: RobustnessSettings
    rows: tuple[RobustnessRow, ...]
    images: int
    unreadable: int
    clean_accuracy: float
    positive_class: str | None
    threshold: float | None
    min_images: int
    resamples: int
    resampled: str
    seconds: float
    passes: int
    examples: torch.Tensor | None
    labels: tuple[str, ...] = ()

    def fragile(self) -> tuple[RobustnessRow, ...]:
        """Per fragile perturbation, its mildest fragile severity, in the perturbations' order."""
        found: dict[str, RobustnessRow] = {}
        for row in self.rows:
            if row.fragile and row.perturbation not in found:
                found[row.perturbation] = row
        return tuple(found.values())


@dataclass(frozen=True)
class _Clean:
    """The clean run of the perturbed images, aligned with the variants' rows; for a
    multi-label model, its ``labels`` with which each image ``has`` and was ``calls``."""

    index: NDArray[np.int64]
    label: NDArray[np.object_]
    prediction: NDArray[np.object_]
    confidence: NDArray[np.float64]
    positive: NDArray[np.bool_] | None
    called: NDArray[np.bool_] | None
    accuracy: float
    labels: tuple[str, ...] = ()
    has: NDArray[np.bool_] | None = None
    calls: NDArray[np.bool_] | None = None


def _clean(
    predictions: pd.DataFrame, images: NDArray[np.int64], positive: str | None, threshold: float,
    labels: tuple[str, ...],
) -> _Clean:  # fmt: skip
    clean = predictions.set_index("index").loc[images]
    truth = clean["label"].to_numpy(dtype=object)
    prediction = clean["prediction"].to_numpy(dtype=object)
    confidence = (
        clean["confidence"].to_numpy(dtype=np.float64)
        if "confidence" in clean  # a multi-label model has none
        else np.full(images.shape[0], np.nan)
    )
    return _Clean(
        index=images,
        label=truth,
        prediction=prediction,
        confidence=confidence,
        positive=None if positive is None else truth == positive,
        called=None if positive is None else clean[f"p_{positive}"].to_numpy() >= threshold,
        accuracy=float((prediction == truth).mean()),
        labels=labels,
        has=label_matrix(truth, labels) if labels else None,
        calls=label_matrix(prediction, labels) if labels else None,
    )


def _columns(
    clean: _Clean, frame: pd.DataFrame, threshold: float
) -> tuple[list[NDArray[np.float64]], list[NDArray[np.bool_]]]:
    """The five measures' per-image values and the images each is over, for one variant."""
    everyone = np.ones(clean.index.shape[0], dtype=bool)
    prediction = frame["prediction"].to_numpy(dtype=object)
    confidence = np.nan_to_num(frame["confidence"].to_numpy(dtype=np.float64), nan=0.0)
    correct = (prediction == clean.label).astype(np.float64)
    values = [correct - (clean.prediction == clean.label)]
    of = [everyone]
    if clean.positive is not None and clean.called is not None:
        p_positive = frame["p_positive"].to_numpy(dtype=np.float64)
        # A non-finite output is no call at all, so never right: a positive not called, a
        # negative called (a changed call when the clean one was right, else unchanged).
        called = np.where(np.isfinite(p_positive), p_positive >= threshold, ~clean.positive)
        change = called.astype(np.float64) - clean.called
        values += [change, -change]
        of += [clean.positive, ~clean.positive]
    else:
        values += [np.zeros_like(correct)] * 2
        of += [np.zeros_like(everyone)] * 2
    values += [(prediction != clean.prediction).astype(np.float64), confidence - clean.confidence]
    of += [everyone, everyone]
    if clean.has is not None and clean.calls is not None:
        # A non-finite output (an empty cell) is no call at all, so never right, as above.
        calls = np.where(
            (prediction == "")[:, None], ~clean.has, label_matrix(prediction, clean.labels)
        )
        change = calls.astype(np.float64) - clean.calls
        for k in range(len(clean.labels)):
            values += [change[:, k], -change[:, k]]
            of += [clean.has[:, k], ~clean.has[:, k]]
    return values, of


def _matrices(
    frame: pd.DataFrame, every: tuple[Variant, ...], clean: _Clean, threshold: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``(N, V x 5)`` per-image values of every variant's measures, and the images each is over."""
    by_variant = dict(iter(frame.groupby(["perturbation", "severity"])))
    values: list[NDArray[np.float64]] = []
    of: list[NDArray[np.bool_]] = []
    for variant in every:
        rows = by_variant[(variant.perturbation.name, variant.severity)]
        v, o = _columns(clean, rows.set_index("index").loc[clean.index].reset_index(), threshold)
        values += v
        of += o
    return np.stack(values, axis=1), np.stack(of, axis=1)


def _estimate(point: float, drawn: NDArray[np.float64]) -> Estimate:
    finite = drawn[np.isfinite(drawn)]
    low, high = np.quantile(finite, [0.025, 0.975]) if finite.size else (np.nan, np.nan)
    return Estimate(float(point), float(low), float(high))


def _fragile(
    changes: dict[str, Estimate | None], turned: dict[str, int], settings: RobustnessSettings,
    minimum: int,
) -> tuple[str, ...]:  # fmt: skip
    """The measures that fell by ``fragile-drop`` or more, with the interval below zero and
    at least ``minimum`` images whose call turned wrong."""
    return tuple(
        name
        for name, change in changes.items()
        if change is not None
        and turned[name] >= minimum
        and change.value <= -settings.fragile_drop
        and change.ci_high < 0
    )


def robustness_summary(
    perturbed: Perturbed,
    predictions: pd.DataFrame,
    positive: str | None,
    threshold: float,
    resampling: Resampling,
    resamples: int,
    min_images: int,
    labels: tuple[str, ...] = (),
) -> Robustness:
    """Compare every variant with the clean run of the same images.

    Args:
        perturbed: The robustness stage's predictions.
        predictions: ``predictions.csv``'s frame (the clean run).
        positive: The positive class, or ``None`` (no sensitivity or specificity).
        threshold: Probability of ``positive`` at or above which an image is called so.
        resampling: What a resample draws, over ``predictions``' rows.
        resamples: Bootstrap resamples.
        min_images: Fewest images whose call turned wrong behind a fragile measure
            (``min-group-size``).
        labels: A multi-label model's labels, in output order (``()``: single-label).
    """
    settings = perturbed.settings
    keep = predictions["index"].isin(perturbed.frame["index"]).to_numpy()
    images = predictions["index"].to_numpy(dtype=np.int64)[keep]
    clean = _clean(predictions, images, positive, threshold, labels)
    every = variants(settings)
    value_matrix, of_matrix = _matrices(perturbed.frame, every, clean, threshold)
    with np.errstate(invalid="ignore"):
        points = (value_matrix * of_matrix).sum(axis=0) / of_matrix.sum(axis=0)
    drawn_from = resampling.subset(keep)
    drawn = weighted_means(
        value_matrix, of_matrix, drawn_from, resamples, np.random.default_rng([settings.seed, 11])
    )
    worse = ((value_matrix < 0) & of_matrix).sum(axis=0)  # images whose call turned wrong
    rows = [
        _row(variant, v, (points, drawn, worse), clean, settings, min_images)
        for v, variant in enumerate(every)
    ]
    return Robustness(
        settings=settings,
        rows=tuple(rows),
        images=int(images.shape[0]),
        unreadable=perturbed.unreadable,
        clean_accuracy=clean.accuracy,
        positive_class=positive,
        threshold=threshold if positive is not None else None,
        min_images=min_images,
        resamples=resamples,
        resampled=drawn_from.describe(),
        seconds=perturbed.seconds,
        passes=perturbed.passes,
        examples=perturbed.examples,
        labels=labels,
    )


def _label_changes(
    labels: tuple[str, ...], estimates: list[Estimate], worse: list[int]
) -> tuple[LabelChange, ...]:
    """Each label's two changes, from its columns' estimates and counts in label order."""
    return tuple(
        LabelChange(label, estimates[2 * k], estimates[2 * k + 1], (worse[2 * k], worse[2 * k + 1]))
        for k, label in enumerate(labels)
    )


def _row(
    variant: Variant, v: int,
    measured: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]],
    clean: _Clean, settings: RobustnessSettings, min_images: int,
) -> RobustnessRow:  # fmt: skip
    """Variant ``v``'s row from every column's point estimate, resampled values and count
    of images whose call turned wrong (``measured``)."""
    points, drawn, worse = measured
    width = len(MEASURES) + 2 * len(clean.labels)
    base = v * width
    turned = {name: int(worse[base + m]) for m, name in enumerate(_MEASURED)}
    estimates = {
        name: _estimate(points[base + m], drawn[:, base + m]) for m, name in enumerate(MEASURES)
    }
    binary = clean.positive is not None
    changes: dict[str, Estimate | None] = {
        "accuracy": estimates["accuracy"],
        "sensitivity": estimates["sensitivity"] if binary else None,
        "specificity": estimates["specificity"] if binary else None,
    }
    columns = range(base + len(MEASURES), base + width)
    labels = _label_changes(
        clean.labels, [_estimate(points[c], drawn[:, c]) for c in columns],
        [int(worse[c]) for c in columns],
    )  # fmt: skip
    for label in labels:
        for name, change, turned_wrong in label.measures():
            changes[name], turned[name] = change, turned_wrong
    return RobustnessRow(
        perturbation=variant.perturbation.name,
        title=variant.perturbation.title,
        severity=variant.severity,
        level=variant.level,
        n=int(clean.index.shape[0]),
        accuracy=clean.accuracy + estimates["accuracy"].value,
        accuracy_change=estimates["accuracy"],
        sensitivity_change=changes["sensitivity"],
        specificity_change=changes["specificity"],
        flips=estimates["flips"],
        confidence_change=estimates["confidence"],
        worse=(turned["accuracy"], turned["sensitivity"], turned["specificity"]),
        fragile=_fragile(changes, turned, settings, min_images),
        labels=labels,
    )
