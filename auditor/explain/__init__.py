"""Explanation methods: one file per method, registered once here.

CLI choices, report sections and tests derive from :data:`METHODS`.
"""

from __future__ import annotations

from auditor.explain.base import GradientMethod, GradientPasses
from auditor.explain.gradcam import GradCam
from auditor.explain.saliency import Saliency

__all__ = ["METHODS", "GradientMethod", "GradientPasses"]

METHODS: dict[str, type[GradientMethod]] = {method.key: method for method in (GradCam, Saliency)}
