"""Counterfactuals of a multi-label model: the smallest change that flips one label's
call.

A set of labels has no single call to change, so each search flips one label: a
misclassified image is searched once for each of its wrong calls, the most confident
first (the label whose probability is farthest, in logits, on the wrong side of its
threshold), up to ``counterfactual-labels`` of them; a sampled image once, for the
label it is called for with the highest probability, or when it is called for none, the
label closest to being called. The searches (:mod:`.segments`, :mod:`.gradient`) then
run unchanged on the label read as a two-class model, whose classes are "the label is
not called" and "the label is called": the label's logit minus its threshold's logit is
that model's binary logit, so its argmax is the label's call at its threshold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from auditor.multilabel.evaluation import label_matrix

__all__ = ["LabelFlip", "label_flips"]

EPSILON = 1e-12
"""Probabilities are clamped to [EPSILON, 1 - EPSILON] (in float64) before their logit
is taken: below any float32 probability but 0 and 1 themselves."""

TIE = 1e-9
"""A label whose probability is at its threshold is called (``p >= t``): its shifted
logit is raised to at least this, so the two-class argmax calls it too."""


def _logit(p: float) -> float:
    p = min(max(p, EPSILON), 1 - EPSILON)
    return math.log(p / (1 - p))


@dataclass(frozen=True)
class LabelFlip:
    """One case's label to flip, and the label read as a two-class model.

    The two-class probabilities are read from the label's probability as the evaluation
    computed it, in float64, so that they call what the evaluation calls (a
    counterfactual is valid only when their fresh call is the other one); the
    two-class logits the gradient search descends are read from the label's logit
    when the model has one (no saturation).

    Attributes:
        label: Its index among the model's labels.
        name: Its name.
        threshold: The probability at which it is called.
        called: Whether the case is called for it (the two-class model's class 1).
        probabilities_only: Whether the model outputs probabilities (no logit).
    """

    label: int
    name: str
    threshold: float
    called: bool
    probabilities_only: bool

    @property
    def original(self) -> int:
        """The two-class model's call on the case: 1 when the label is called."""
        return int(self.called)

    @property
    def calls(self) -> tuple[str, str]:
        """The two classes in words."""
        return (f"not {self.name}", self.name)

    def _shifted(self, scores: torch.Tensor, probabilities: bool) -> torch.Tensor:
        """The label's logit minus its threshold's (float64; a tie raised to :data:`TIE`)."""
        column = scores[:, self.label].double()
        if probabilities:
            column = torch.logit(column.clamp(EPSILON, 1 - EPSILON))
        shifted = column - _logit(self.threshold)
        return torch.where(shifted >= 0, shifted.clamp_min(TIE), shifted)

    def probabilities(self, label_probabilities: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` the two classes' probabilities from every label's ``(n, K)``."""
        called = torch.sigmoid(self._shifted(label_probabilities, True))
        return torch.stack([1 - called, called], dim=1)

    def scores(self, label_scores: torch.Tensor) -> torch.Tensor:
        """``(n, 2)`` the two classes' logits (differentiable) from every label's score
        (its logit, or its probability when the model outputs probabilities)."""
        shifted = self._shifted(label_scores, self.probabilities_only)
        return torch.stack([torch.zeros_like(shifted), shifted], dim=1)

    def label_probability(self, new_class: int, probability: float) -> float:
        """The label's probability from the two-class model's ``probability`` of its
        class ``new_class``."""
        called = probability if new_class == 1 else 1 - probability
        return 1 / (1 + math.exp(-(_logit(called) + _logit(self.threshold))))


def _chosen(has: np.ndarray, calls: np.ndarray, margins: np.ndarray, wrong: bool) -> list[int]:
    """The labels to flip of one image: its wrong calls, the most confident first, or
    its most confident call (the label closest to being called when it is called for
    none)."""
    if wrong and (has != calls).any():
        order = np.argsort(-np.abs(margins), kind="stable")
        return [int(k) for k in order if has[k] != calls[k]]
    if calls.any():
        return [int(np.where(calls, margins, -np.inf).argmax())]
    return [int(margins.argmax())]


def label_flips(
    predictions: pd.DataFrame, cases: list[tuple[int, str]], names: tuple[str, ...],
    thresholds: tuple[float, ...], probabilities_only: bool, most: int,
) -> tuple[list[tuple[int, str, LabelFlip]], int]:  # fmt: skip
    """The searches, in the order of ``cases`` (``(index, role)``, role ``misclassified``
    or ``sampled``): each case with a label to flip, a misclassified one once for each
    wrong call up to ``most`` (the most confident); and how many wrong calls were left
    out beyond them."""
    rows = predictions.set_index("index")
    searches = []
    left_out = 0
    logits = np.array([_logit(t) for t in thresholds])
    for index, role in cases:
        row = rows.loc[[index]]
        has = label_matrix(row["label"], names)[0]
        calls = label_matrix(row["prediction"], names)[0]
        p = row[[f"p_{n}" for n in names]].to_numpy(dtype=float)[0]
        margins = np.array([_logit(v) for v in p]) - logits
        chosen = _chosen(has, calls, margins, role == "misclassified")
        left_out += max(0, len(chosen) - most)
        for k in chosen[:most]:
            flip = LabelFlip(k, names[k], thresholds[k], bool(calls[k]), probabilities_only)
            searches.append((index, role, flip))
    return searches, left_out
