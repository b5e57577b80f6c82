"""The multi-label settings: one declaration each (see :mod:`auditor.settings`)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.settings import setting

__all__ = ["OUTPUTS", "LabelSettings", "probabilities_check"]

OUTPUTS = ("auto", "single-label", "multi-label")


def probabilities_check(values: tuple[float, ...]) -> str | None:
    """What is wrong with ``label-thresholds`` (``None``: nothing)."""
    if not values:
        return "give one threshold for every label, or one per label in label order"
    if any(not 0.0 < v < 1.0 for v in values):
        return "each threshold is a probability strictly between 0 and 1"
    return None


@dataclass(frozen=True)
class LabelSettings:
    """What the model's output means: one class per image, or a set of labels.

    Set in the config file (flat or in its ``[labels]`` table); ``output`` also has a flag.
    """

    output: str = setting(
        "auto",
        help="single-label (one class per image: softmax, or one binary score) or "
        "multi-label (each image has a set of labels: one sigmoid score per label); auto "
        "is multi-label when a manifest's label cell lists several labels (a;b) or none (-)",
        choices=OUTPUTS,
        flag=True,
    )
