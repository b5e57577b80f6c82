"""Explanation methods: one file per method, registered once here.

CLI choices, config validation, report sections and tests derive from :data:`METHODS`;
its order is the order of the report's panels.
"""

from __future__ import annotations

from auditor.explain.base import (
    Batch,
    ExplainContext,
    ExplainSettings,
    GradientMethod,
    GradientPasses,
    Method,
    PassCount,
)
from auditor.explain.cam import Cam
from auditor.explain.gradcam import GradCam
from auditor.explain.gradcam_plusplus import GradCamPlusPlus
from auditor.explain.guided_backprop import GuidedBackprop
from auditor.explain.guided_gradcam import GuidedGradCam
from auditor.explain.input_x_gradient import InputXGradient
from auditor.explain.integrated_gradients import IntegratedGradients
from auditor.explain.kernel_shap import KernelShap
from auditor.explain.lime import Lime
from auditor.explain.occlusion import Occlusion
from auditor.explain.saliency import Saliency
from auditor.explain.score_cam import ScoreCam
from auditor.explain.smoothgrad import SmoothGrad

__all__ = [
    "METHODS",
    "Batch",
    "ExplainContext",
    "ExplainSettings",
    "GradientMethod",
    "GradientPasses",
    "Method",
    "PassCount",
]

METHODS: dict[str, type[Method]] = {
    method.key: method
    for method in (
        Saliency,
        InputXGradient,
        GuidedBackprop,
        IntegratedGradients,
        SmoothGrad,
        Occlusion,
        Cam,
        GradCam,
        GradCamPlusPlus,
        GuidedGradCam,
        ScoreCam,
        Lime,
        KernelShap,
    )
}
