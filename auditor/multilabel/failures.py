"""Failure modes of a multi-label model: which label calls are wrong, and which of them
the model was sure of.

A wrong call is a label an image has and was not called for (*missed*) or one it was
called for without having it (*false*). It is *confident* when the label's probability
was at least ``high-confidence`` on a false call, or at most ``1 - high-confidence`` on
a miss: nothing in the output warns the reader. Per label, its wrong and confident
calls; the confident ones listed, misses first (a finding the model is sure is absent);
per metadata value, the images with a label wrong and the wrong calls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from auditor.clinical.groups import Grouping
from auditor.multilabel.evaluation import label_matrix

__all__ = ["ConfidentCall", "LabelFailures", "LabelWrongCalls", "ValueWrongCalls", "label_failures"]


@dataclass(frozen=True)
class LabelWrongCalls:
    """One label's wrong calls: ``missed`` of its ``positives`` images, ``false`` calls
    among the others, and the confident ones of each."""

    label: str
    positives: int
    missed: int
    false: int
    confident_missed: int
    confident_false: int


@dataclass(frozen=True)
class ConfidentCall:
    """One confident wrong call.

    Attributes:
        missed: The image has the label and was not called for it (else: called for
            it without having it).
        probability: The label's probability.
        confidence: How sure the model was of its call: the probability of a false call,
            one minus it for a miss.
    """

    path: str
    label: str
    missed: bool
    probability: float
    confidence: float


@dataclass(frozen=True)
class ValueWrongCalls:
    """The wrong calls among the images of one value of one metadata column."""

    column: str
    value: str
    n: int
    wrong_images: int
    wrong_calls: int


@dataclass(frozen=True)
class LabelFailures:
    """A multi-label evaluation's failure modes.

    Attributes:
        cut: ``high-confidence``.
        by_label: Every label's wrong calls, in output order.
        confident: Every confident wrong call: misses first, then by confidence.
        by_value: Per metadata column and value, the wrong images and calls.
    """

    cut: float
    by_label: tuple[LabelWrongCalls, ...]
    confident: tuple[ConfidentCall, ...]
    by_value: tuple[ValueWrongCalls, ...]

    @property
    def n_missed(self) -> int:
        """Confident wrong calls that missed a label the image has."""
        return sum(c.missed for c in self.confident)


def label_failures(
    predictions: pd.DataFrame, grouping: Grouping, names: tuple[str, ...], cut: float
) -> LabelFailures:
    """The wrong calls of a multi-label ``predictions.csv``'s frame (its ``label`` and
    ``prediction`` cells and ``p_<label>`` columns), confident at ``cut``."""
    truth = label_matrix(predictions["label"], names)
    calls = label_matrix(predictions["prediction"], names)
    p = predictions[[f"p_{name}" for name in names]].to_numpy(dtype=np.float64)
    missed, false = truth & ~calls, calls & ~truth
    sure_missed, sure_false = missed & (p <= 1 - cut), false & (p >= cut)
    counted = np.stack([m.sum(axis=0) for m in (truth, missed, false, sure_missed, sure_false)])
    by_label = tuple(
        LabelWrongCalls(name, *map(int, counted[:, k])) for k, name in enumerate(names)
    )
    paths = predictions["path"].astype(str).tolist()
    confident = sorted(
        (
            ConfidentCall(
                paths[i],
                names[k],
                bool(sure_missed[i, k]),
                float(p[i, k]),
                float(1 - p[i, k] if sure_missed[i, k] else p[i, k]),
            )
            for i, k in zip(*np.nonzero(sure_missed | sure_false), strict=True)
        ),
        key=lambda c: (not c.missed, -c.confidence, c.path, c.label),
    )
    wrong = missed | false
    by_value = []
    for column, values in grouping.groups.items():
        table = pd.DataFrame(
            {"value": values.to_numpy(), "images": wrong.any(axis=1), "calls": wrong.sum(axis=1)}
        )
        counts = table.groupby("value").agg(n=("images", "size"), images=("images", "sum"),
                                             calls=("calls", "sum"))  # fmt: skip
        for value, n, images, wrong_calls in counts.itertuples():
            by_value.append(ValueWrongCalls(column, str(value), int(n), int(images),
                                            int(wrong_calls)))  # fmt: skip
    return LabelFailures(cut, by_label, tuple(confident), tuple(by_value))
