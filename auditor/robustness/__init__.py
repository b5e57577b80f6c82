"""Robustness: the model under perturbed images (stage), and how its calls change (analysis)."""

from auditor.robustness.analysis import MEASURES, Robustness, RobustnessRow, robustness_summary
from auditor.robustness.perturbations import PERTURBATIONS, Perturbation
from auditor.robustness.settings import RobustnessSettings
from auditor.robustness.stage import Perturbed, Variant, perturbed_predictions, variants

__all__ = [
    "MEASURES",
    "PERTURBATIONS",
    "Perturbation",
    "Perturbed",
    "Robustness",
    "RobustnessRow",
    "RobustnessSettings",
    "Variant",
    "perturbed_predictions",
    "robustness_summary",
    "variants",
]
