"""Compare two audits: metrics before and after, McNemar's test, and drift.

:func:`compare_audits` is what ``auditor compare OLD NEW`` writes as ``comparison.json``
and what ``auditor run`` adds to its report when the history has an earlier audit of the
same model name; :data:`COMPARED` lists the numbers a policy criterion may name
(``compare.accuracy.diff.ci_high >= -0.02``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.compare.audits import Audit
from auditor.compare.drift import (
    Shift,
    explanation_drift,
    intensity_drift,
    mmd_test,
    prediction_drift,
)
from auditor.compare.stats import METRICS, Calls, Difference, McNemar, difference, mcnemar
from auditor.errors import ConfigError
from auditor.history.settings import PeriodicSettings
from auditor.multilabel import NOT_COMPARED

__all__ = ["COMPARED", "MIN_SUBGROUP", "PAIRED_SHARE", "Comparison", "compare_audits"]

MIN_SUBGROUP = 10
"""Fewest images a subgroup needs in each audit to be compared."""

PAIRED_SHARE = 0.95
"""Two audits are compared pairwise when this share of each one's images (by file and
label) is in the other: a paired change measured on a few shared images would hide what
the rest of a grown data set says."""

COMPARED: dict[str, str] = {
    **{
        f"compare.{name}.{part}": f"{name.replace('_', ' ')} {what} (comparison with the "
        f"previous audit)"
        for name in METRICS
        for part, what in (
            ("before", "in the previous audit"),
            ("after", "in this audit"),
            ("diff.value", "change"),
            ("diff.ci_low", "change, lower 95% bound"),
            ("diff.ci_high", "change, upper 95% bound"),
        )
    },
    "compare.mcnemar.p_value": "McNemar's exact test on the calls of the same images",
    "compare.mcnemar.p_worse": "McNemar's one-sided test that more calls became wrong",
    "compare.drift.intensity.p_value": "smallest Holm-adjusted p-value of the input intensities",
    "compare.drift.embedding.p_value": "permutation p-value of the embedding's MMD",
    "compare.drift.predictions.p_value": "chi-squared p-value of the predicted classes",
    "compare.drift.confidence.p_value": "Kolmogorov-Smirnov p-value of the confidence",
    "compare.regressions": "headline metrics whose whole 95% interval of change is below 0",
    "compare.subgroup_regressions": "subgroups whose accuracy fell (Bonferroni-adjusted "
    "interval below 0)",
    "compare.findings": "findings of the comparison with the previous audit",
}
"""The numbers of a comparison a policy criterion may name, with what each is."""


@dataclass(frozen=True)
class Comparison:
    """Two audits compared.

    Attributes:
        old, new: The audits' labels and identities.
        paired: Whether the metrics were compared on the same images.
        shared: How many images both audits scored (by file SHA-256).
        metrics: The headline metrics.
        subgroups: ``(column, value, accuracy difference)`` for every metadata value with
            at least :data:`MIN_SUBGROUP` images in each audit.
        mcnemar: McNemar's test on the shared images (``None``: unpaired).
        intensity: The input intensity statistics (none when both audits read the same
            files, by the data's SHA-256).
        embedding: The embedding's MMD (``None``: see ``embedding_note``).
        predictions: The predicted classes and the confidence.
        explanations: Per trusted method, its maps' rank correlation across the audits.
        alpha: The significance level.
        same_files: Both audits read the same files (the same data SHA-256), so the
            inputs cannot have moved.
    """

    old: tuple[str, dict[str, str]]
    new: tuple[str, dict[str, str]]
    paired: bool
    shared: int
    metrics: tuple[Difference, ...]
    subgroups: tuple[tuple[str, str, Difference], ...]
    mcnemar: McNemar | None
    intensity: tuple[Shift, ...]
    embedding: Shift | None
    embedding_note: str
    predictions: tuple[Shift, ...]
    explanations: pd.DataFrame
    alpha: float
    same_files: bool = False

    @property
    def regressions(self) -> tuple[Difference, ...]:
        """Headline metrics that fell significantly."""
        return tuple(d for d in self.metrics if d.worse)

    @property
    def subgroup_regressions(self) -> tuple[tuple[str, str, Difference], ...]:
        """Subgroups whose accuracy fell (their intervals are Bonferroni-adjusted over the
        subgroups compared)."""
        return tuple(s for s in self.subgroups if s[2].worse)


def _codes(audit: Audit, positive: str | None) -> Calls:
    frame = audit.predictions
    if positive is not None:
        label = (frame["label"].astype(str) == positive).to_numpy(np.int64)
        called = (frame["prediction"].astype(str) == positive).to_numpy(np.int64)
        column = f"p_{positive}"
        return Calls(label, called, frame[column].to_numpy(np.float64), audit.threshold)
    index = {c: k for k, c in enumerate(audit.classes)}
    return Calls(
        frame["label"].astype(str).map(index).to_numpy(np.int64),
        frame["prediction"].astype(str).map(index).to_numpy(np.int64),
    )


def _pairs(old: pd.DataFrame, new: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``old`` and ``new`` holding the same file with the same label (SHA-256 and
    label, then occurrence: two copies of a file are paired in order)."""

    def keyed(frame: pd.DataFrame) -> pd.DataFrame:
        image = frame["sha256"].astype(str) + "\t" + frame["label"].astype(str)
        return pd.DataFrame({"key": image + "#" + image.groupby(image).cumcount().astype(str),
                             "row": np.arange(len(frame))})  # fmt: skip

    merged = keyed(old).merge(keyed(new), on="key", suffixes=("_old", "_new"))
    merged = merged.sort_values("row_new")
    return merged["row_old"].to_numpy(np.int64), merged["row_new"].to_numpy(np.int64)


def _metadata(frame: pd.DataFrame) -> list[str]:
    fixed = {"index", "path", "label", "prediction", "confidence", "correct", "sha256"}
    return [c for c in frame.columns if c not in fixed and not c.startswith("p_")]


def _within(
    pairs: tuple[np.ndarray, np.ndarray], rows: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The pairs whose two images are both among ``rows`` (of the old and of the new
    audit), as positions within those rows."""
    position_old = {int(r): k for k, r in enumerate(rows[0])}
    position_new = {int(r): k for k, r in enumerate(rows[1])}
    kept = [
        (position_old[int(a)], position_new[int(b)])
        for a, b in zip(*pairs, strict=True)
        if int(a) in position_old and int(b) in position_new
    ]
    found = np.array(kept, dtype=np.int64).reshape(-1, 2)
    return found[:, 0], found[:, 1]


def _subgroups(
    old: Audit, new: Audit, calls: tuple[Calls, Calls], pairs: tuple[np.ndarray, np.ndarray]
    | None, resamples: int, rng: np.random.Generator,
) -> list[tuple[str, str, Difference]]:  # fmt: skip
    """Accuracy in each metadata value with at least :data:`MIN_SUBGROUP` images in each
    audit (paired: among the pairs whose images have the value in both), each interval
    Bonferroni-adjusted over the subgroups compared (many subgroups, each at 95%, would
    show a fall somewhere on most nights by chance)."""
    found = []
    for column in [c for c in _metadata(new.predictions) if c in old.predictions.columns]:
        before, after = (a.predictions[column].fillna("").astype(str) for a in (old, new))
        values = sorted(set(after) - {""})  # "": no value
        if not 2 <= len(values) <= 20:
            continue
        for value in values:
            rows = (
                np.flatnonzero(before.to_numpy() == value),
                np.flatnonzero(after.to_numpy() == value),
            )
            inside = _within(pairs, rows) if pairs is not None else None
            if min(len(rows[0]), len(rows[1])) < MIN_SUBGROUP or (
                inside is not None and len(inside[0]) < MIN_SUBGROUP
            ):
                continue
            found.append((column, value, rows, inside))
    level = 1 - 0.05 / max(len(found), 1)
    return [
        (column, value, difference("accuracy", calls[0].take(rows[0]), calls[1].take(rows[1]),
                                   inside, resamples, rng, level))
        for column, value, rows, inside in found
    ]  # fmt: skip


def compare_audits(
    old: Audit, new: Audit, settings: PeriodicSettings, resamples: int
) -> Comparison:
    """Compare the audit ``new`` with the earlier ``old``.

    Raises:
        ConfigError: The two audits' models have different classes, or one is
            multi-label.
    """
    for audit in (old, new):
        if audit.multi_label:
            raise ConfigError(
                f"{audit.label} audited a multi-label model and {NOT_COMPARED}; compare audits "
                "of single-label models"
            )
    if old.classes != new.classes:
        raise ConfigError(
            f"{old.label} and {new.label} audit different classes ({', '.join(old.classes)} "
            f"against {', '.join(new.classes)}); compare audits of one kind of model"
        )
    rng = np.random.default_rng(settings.seed)
    positive = new.positive if new.positive == old.positive else None
    calls = (_codes(old, positive), _codes(new, positive))
    rows = _pairs(old.predictions, new.predictions)
    shared = len(rows[0])
    largest = max(len(old.predictions), len(new.predictions))
    paired = shared >= max(MIN_SUBGROUP, PAIRED_SHARE * largest)
    pairs = rows if paired else None
    names = [n for n in METRICS if positive is not None or n in ("accuracy", "balanced_accuracy")]
    metrics = [difference(n, *calls, pairs, resamples, rng) for n in names]
    subgroups = _subgroups(old, new, calls, pairs, resamples, rng)
    tested = None
    if paired:
        correct = (calls[0].label == calls[0].prediction, calls[1].label == calls[1].prediction)
        tested = mcnemar(correct[0][rows[0]], correct[1][rows[1]])
    embedding, note = _embedding(old, new, settings)
    same_files = old.identity["data_sha256"] == new.identity["data_sha256"]
    intensity = (
        intensity_drift(old.intensities, new.intensities, settings.compare_alpha)
        if old.intensities is not None and new.intensities is not None and not same_files
        else []
    )
    methods = tuple(m for m in new.trusted if m in old.trusted)
    return Comparison(
        (old.label, old.identity), (new.label, new.identity), paired, shared, tuple(metrics),
        tuple(subgroups), tested, tuple(intensity), embedding, note,
        tuple(prediction_drift(old.predictions, new.predictions, new.classes,
                               settings.compare_alpha)),
        explanation_drift(old.maps, new.maps, methods), settings.compare_alpha, same_files,
    )  # fmt: skip


def _embedding(old: Audit, new: Audit, settings: PeriodicSettings) -> tuple[Shift | None, str]:
    if old.embeddings is None or new.embeddings is None:
        return None, "not measured: an audit kept no embeddings"
    if old.identity["model_sha256"] != new.identity["model_sha256"]:
        return None, "not measured: the two models' embeddings are in different spaces"
    shift = mmd_test(
        np.asarray(old.embeddings, np.float32), np.asarray(new.embeddings, np.float32),
        settings.drift_permutations, settings.drift_points, settings.compare_alpha,
        settings.seed,
    )  # fmt: skip
    return shift, ""
