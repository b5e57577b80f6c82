"""What every explanation method shares: the gradient passes and the method interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from auditor.explain.postprocess import STEPS

__all__ = ["GradientMethod", "GradientPasses"]


@dataclass(frozen=True)
class GradientPasses:
    """One forward and one backward pass over a batch, shared by the gradient methods.

    Attributes:
        inputs: ``(B, C, H, W)`` model inputs (normalised as the model expects).
        input_grads: ``(B, C, H, W)`` gradient of each image's target score w.r.t. its input.
        activations: ``(B, K, h, w)`` output of the target layer.
        activation_grads: ``(B, K, h, w)`` gradient of the target score w.r.t. ``activations``.
    """

    inputs: torch.Tensor
    input_grads: torch.Tensor
    activations: torch.Tensor
    activation_grads: torch.Tensor


class GradientMethod(ABC):
    """A method computed from :class:`GradientPasses` alone.

    Subclasses set the class attributes and implement :meth:`raw_map`; the steps in
    ``postprocessing`` (names from :data:`auditor.explain.postprocess.STEPS`) are
    applied after it, and ``min-max`` is applied for display only.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    uses_layer: ClassVar[bool]
    postprocessing: ClassVar[tuple[str, ...]]
    reading: ClassVar[str]

    @abstractmethod
    def raw_map(self, passes: GradientPasses) -> torch.Tensor:
        """The method's map before post-processing: ``(B, h, w)`` or ``(B, C, H, W)``."""

    def attribute(self, passes: GradientPasses) -> torch.Tensor:
        """``(B, H, W)`` float32 map at input resolution, before min-max normalisation."""
        size = (int(passes.inputs.shape[-2]), int(passes.inputs.shape[-1]))
        maps = self.raw_map(passes)
        for step in self.postprocessing:
            maps = STEPS[step](maps, size) if step == "upsample-bilinear" else STEPS[step](maps)
        return maps.float()
