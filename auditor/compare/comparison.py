"""Compare two audits: metrics before and after, McNemar's test, and drift.

:func:`compare_audits` is what ``auditor compare OLD NEW`` writes as ``comparison.json``
and what ``auditor run`` adds to its report when the history has an earlier audit of the
same model name; :data:`COMPARED` lists the numbers a policy criterion may name
(``compare.accuracy.diff.ci_high >= -0.02``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.compare.audits import Audit
from auditor.compare.drift import (
    Shift,
    explanation_drift,
    intensity_drift,
    label_prediction_drift,
    mmd_test,
    prediction_drift,
)
from auditor.compare.stats import METRICS, Calls, Difference, McNemar, difference, mcnemar
from auditor.errors import ConfigError
from auditor.history.settings import PeriodicSettings
from auditor.multilabel.evaluation import label_matrix

__all__ = [
    "COMPARED",
    "MIN_SUBGROUP",
    "PAIRED_SHARE",
    "Comparison",
    "compare_audits",
    "rate_images",
    "subgroup_metric",
]

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
    "compare.drift.predictions.p_value": "p-value of the predicted classes' shares "
    "(chi-squared; paired on the same images: McNemar's exact test when the changed calls "
    "involve two classes, else Stuart-Maxwell's; a multi-label model: the smallest "
    "Holm-adjusted p-value of its labels' shares called, Fisher's exact test, paired: "
    "McNemar's)",
    "compare.drift.confidence.p_value": "p-value of the confidence (Kolmogorov-Smirnov; "
    "paired on the same images: Wilcoxon's signed-rank test; a multi-label model: the "
    "smallest Holm-adjusted one of its labels' probabilities)",
    "compare.regressions": "headline metrics whose whole 95% interval of change is below 0",
    "compare.subgroup_regressions": "subgroups whose accuracy fell (Bonferroni-adjusted "
    "interval below 0; a multi-label model: subset accuracy)",
    "compare.label_regressions": "a multi-label model's label sensitivities and "
    "specificities that fell (Bonferroni-adjusted interval below 0; 0 for a single-label one)",
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
            at least :data:`MIN_SUBGROUP` images in each audit (a multi-label model's:
            subset accuracy).
        mcnemar: McNemar's test on the shared images (``None``: unpaired).
        intensity: The input intensity statistics (none when both audits read the same
            files, by the data's SHA-256).
        embedding: The embedding's MMD (``None``: see ``embedding_note``).
        predictions: The predicted classes and the confidence (a multi-label model's: its
            labels' shares called and their probabilities).
        explanations: Per trusted method, its maps' rank correlation across the audits.
        alpha: The significance level.
        same_files: Both audits read the same files (the same data SHA-256), so the
            inputs cannot have moved.
        labels: A multi-label model's ``(label, sensitivity or specificity difference)``
            for each label, intervals Bonferroni-adjusted over the rates compared
            (``n_before``, ``n_after``: the images with the label, or without it).
        labels_skipped: The label rates not compared (too few images), with their counts.
        multi_label: Whether the audits are of a multi-label model.
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
    labels: tuple[tuple[str, Difference], ...] = ()
    labels_skipped: tuple[LabelRate, ...] = ()
    multi_label: bool = False

    @property
    def regressions(self) -> tuple[Difference, ...]:
        """Headline metrics that fell significantly."""
        return tuple(d for d in self.metrics if d.worse)

    @property
    def subgroup_regressions(self) -> tuple[tuple[str, str, Difference], ...]:
        """Subgroups whose accuracy fell (their intervals are Bonferroni-adjusted over the
        subgroups compared)."""
        return tuple(s for s in self.subgroups if s[2].worse)

    @property
    def label_regressions(self) -> tuple[tuple[str, Difference], ...]:
        """A multi-label model's label rates that fell (Bonferroni-adjusted intervals)."""
        return tuple(r for r in self.labels if r[1].worse)

    @property
    def subgroup_metric(self) -> str:
        """See :func:`subgroup_metric`."""
        return subgroup_metric(self.multi_label)


def subgroup_metric(multi_label: bool) -> str:
    """What the subgroups compare: accuracy, or a multi-label model's subset accuracy."""
    return "subset_accuracy" if multi_label else "accuracy"


def rate_images(name: str) -> str:
    """The images a label's rate is measured on: ``with`` the label (sensitivity) or
    ``without`` it (specificity)."""
    return "with" if name == "sensitivity" else "without"


def _codes(audit: Audit, positive: str | None, names: tuple[str, ...]) -> Calls:
    """An audit's calls, a multi-label audit's as ``(N, K)`` matrices of ``names``."""
    frame = audit.predictions
    if audit.multi_label:
        return Calls(label_matrix(frame["label"], names), label_matrix(frame["prediction"], names))
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


def _metadata(audit: Audit) -> list[str]:
    fixed = {"index", "path", "label", "prediction", "confidence", "correct", "sha256"}
    if audit.multi_label:
        fixed.add("errors")  # the labels an image got wrong
    return [c for c in audit.predictions.columns if c not in fixed and not c.startswith("p_")]


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
    """Accuracy (a multi-label model's: subset accuracy) in each metadata value with at
    least :data:`MIN_SUBGROUP` images in each audit (paired: among the pairs whose images
    have the value in both), each interval Bonferroni-adjusted over the subgroups compared
    (many subgroups, each at 95%, would show a fall somewhere on most nights by chance)."""
    found = []
    for column in [c for c in _metadata(new) if c in old.predictions.columns]:
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
    metric = subgroup_metric(new.multi_label)
    return [
        (column, value, difference(metric, calls[0].take(rows[0]), calls[1].take(rows[1]),
                                   inside, resamples, rng, level))
        for column, value, rows, inside in found
    ]  # fmt: skip


LabelRate = tuple[str, str, tuple[int, int]]
"""A label's rate not compared: the label, ``sensitivity`` or ``specificity``, and the
images it would be measured on in each audit (with the label, or without it)."""


def _label_rates(
    classes: tuple[str, ...], calls: tuple[Calls, Calls], pairs: tuple[np.ndarray, np.ndarray]
    | None, resamples: int, rng: np.random.Generator,
) -> tuple[list[tuple[str, Difference]], list[LabelRate]]:  # fmt: skip
    """A multi-label model's sensitivity and specificity of each label, as each audit
    called it, where at least :data:`MIN_SUBGROUP` of the images compared (paired: the
    pairs) have the label (sensitivity) or lack it (specificity) in each audit, each
    interval Bonferroni-adjusted over the rates compared; ``n_before`` and ``n_after``
    count those images. Also the rates not compared, with their counts: a rate read
    from a few images would swing from 1 to 0 on the calls of one or two."""
    if pairs is None:
        rows = (np.arange(len(calls[0].label)), np.arange(len(calls[1].label)))
    else:
        rows = pairs
    rates, skipped = [], []
    for k, name in enumerate(classes):
        sides = (_label_calls(calls[0], k), _label_calls(calls[1], k))
        for metric, truth in (("sensitivity", 1), ("specificity", 0)):
            before, after = (
                int(np.sum(c.label[r] == truth)) for c, r in zip(sides, rows, strict=True)
            )
            if min(before, after) < MIN_SUBGROUP:
                skipped.append((name, metric, (before, after)))
            else:
                rates.append((name, metric, sides, (before, after)))
    level = 1 - 0.05 / max(len(rates), 1)
    return [
        (name, dataclasses.replace(difference(metric, *sides, pairs, resamples, rng, level),
                                   n_before=counts[0], n_after=counts[1]))
        for name, metric, sides, counts in rates
    ], skipped  # fmt: skip


def _label_calls(calls: Calls, k: int) -> Calls:
    """Label ``k`` of a multi-label audit's calls, as a binary test's (1: has it, called)."""
    return Calls(calls.label[:, k].astype(np.int64), calls.prediction[:, k].astype(np.int64))


def _check_kinds(old: Audit, new: Audit) -> None:
    """Raise a :class:`ConfigError` unless the two audits are of one kind of model."""
    if old.multi_label != new.multi_label:
        multi, single = (old, new) if old.multi_label else (new, old)
        raise ConfigError(
            f"{multi.label} audited a multi-label model and {single.label} a single-label "
            "one; compare two audits of one kind of model"
        )
    same = set(old.classes) == set(new.classes) if new.multi_label else old.classes == new.classes
    if not same:
        raise ConfigError(
            f"{old.label} and {new.label} audit different classes ({', '.join(old.classes)} "
            f"against {', '.join(new.classes)}); compare audits of one kind of model"
        )


def _metric_names(multi_label: bool, positive: str | None) -> list[str]:
    """The headline metrics compared."""
    if multi_label:
        return ["subset_accuracy", "label_accuracy"]
    binary = ("accuracy", "balanced_accuracy", "auc", "sensitivity", "specificity")
    return [n for n in binary if positive is not None or n in ("accuracy", "balanced_accuracy")]


def compare_audits(
    old: Audit, new: Audit, settings: PeriodicSettings, resamples: int
) -> Comparison:
    """Compare the audit ``new`` with the earlier ``old``.

    Raises:
        ConfigError: The two audits' models have different classes, or one is
            multi-label and the other not.
    """
    _check_kinds(old, new)
    rng = np.random.default_rng(settings.seed)
    multi_label = new.multi_label
    positive = new.positive if new.positive == old.positive and not multi_label else None
    calls = (_codes(old, positive, new.classes), _codes(new, positive, new.classes))
    rows = _pairs(old.predictions, new.predictions)
    shared = len(rows[0])
    largest = max(len(old.predictions), len(new.predictions))
    paired = shared >= max(MIN_SUBGROUP, PAIRED_SHARE * largest)
    pairs = rows if paired else None
    metrics = [
        difference(n, *calls, pairs, resamples, rng) for n in _metric_names(multi_label, positive)
    ]
    subgroups = _subgroups(old, new, calls, pairs, resamples, rng)
    labels, skipped = (
        _label_rates(new.classes, calls, pairs, resamples, rng) if multi_label else ([], [])
    )
    tested = mcnemar(calls[0].correct[rows[0]], calls[1].correct[rows[1]]) if paired else None
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
        _predictions(old, new, calls, settings.compare_alpha, pairs),
        explanation_drift(old.maps, new.maps, methods), settings.compare_alpha, same_files,
        tuple(labels), tuple(skipped), multi_label,
    )  # fmt: skip


def _predictions(
    old: Audit, new: Audit, calls: tuple[Calls, Calls], alpha: float,
    pairs: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[Shift, ...]:  # fmt: skip
    """Whether the predictions moved: the predicted classes and the confidence, or a
    multi-label model's labels' shares called (on the same images when ``pairs``) and
    probabilities."""
    if new.multi_label:
        return tuple(label_prediction_drift(
            (calls[0].prediction, old.predictions), (calls[1].prediction, new.predictions),
            new.classes, alpha, pairs,
        ))  # fmt: skip
    return tuple(prediction_drift(old.predictions, new.predictions, new.classes, alpha, pairs))


def _embedding(old: Audit, new: Audit, settings: PeriodicSettings) -> tuple[Shift | None, str]:
    if old.embeddings is None or new.embeddings is None:
        return None, "not measured: an audit kept no embeddings"
    if old.identity["model_sha256"] != new.identity["model_sha256"]:
        return None, "not measured: the two models' embeddings are in different spaces"
    lengths = old.embeddings.shape[1], new.embeddings.shape[1]
    if lengths[0] != lengths[1]:
        return None, (
            f"not measured: the embeddings were read at different layers ({lengths[0]} and "
            f"{lengths[1]} numbers; embedding-layer)"
        )
    shift = mmd_test(
        np.asarray(old.embeddings, np.float32), np.asarray(new.embeddings, np.float32),
        settings.drift_permutations, settings.drift_points, settings.compare_alpha,
        settings.seed,
    )  # fmt: skip
    return shift, ""
