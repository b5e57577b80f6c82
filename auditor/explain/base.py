"""What every explanation method shares: settings, the model access, passes and the interface.

A method is a small class with its paper, its post-processing steps (named, so the
report can state them) and one function that returns its raw map for a batch. Methods
built from gradients read one shared :class:`GradientPasses`; perturbation methods call
the model through :class:`ExplainContext`, at the batch size measured for this device.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from auditor.explain.postprocess import STEPS
from auditor.explain.settings import ExplainSettings
from auditor.explain.superpixels import slic_segments
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind, class_scores, target_scores
from auditor.taps import LinearHead

__all__ = [
    "Batch",
    "ExplainContext",
    "ExplainSettings",
    "GradientMethod",
    "GradientPasses",
    "Method",
    "PassCount",
    "fold_tokens",
    "token_grid",
]


@dataclass(frozen=True)
class GradientPasses:
    """One forward pass and its backward passes over a batch, shared by the gradient methods.

    Attributes:
        inputs: ``(B, C, H, W)`` model inputs (normalised as the model expects).
        targets: ``(B,)`` class indices explained.
        input_grads: ``(B, C, H, W)`` gradient of each image's target score w.r.t. its input.
        activations: ``(B, K, h, w)`` output of the target layer (a transformer's tokens
            folded into a grid); empty without a target layer.
        activation_grads: ``(B, K, h, w)`` gradient of the target score w.r.t. it.
        guided_input_grads: ``(B, C, H, W)`` input gradient with every ReLU's backward
            pass guided (negative gradients zeroed); empty unless asked for.
        head_features: ``(B, D, h, w)`` feature map pooled by a GAP + linear head;
            empty unless asked for.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    input_grads: torch.Tensor
    activations: torch.Tensor
    activation_grads: torch.Tensor
    guided_input_grads: torch.Tensor
    head_features: torch.Tensor


@dataclass(frozen=True)
class PassCount:
    """The passes a method needs per explained image: its cost floor.

    Attributes:
        forward: Forward passes without gradients.
        backward: Forward+backward passes.
    """

    forward: int = 0
    backward: int = 0


def token_grid(tokens: int, prefix: int | None) -> tuple[int, int] | None:
    """How ``tokens`` transformer tokens fold into a square grid.

    Args:
        tokens: Tokens per image (``T``).
        prefix: Leading tokens (class, distillation, registers) before the grid;
            ``None``: ``T - s*s`` for the largest ``s*s <= T``.

    Returns:
        ``(dropped, side)``: leading tokens dropped and the grid's side (``>= 1``), or
        ``None`` when the remaining tokens are not a square number.
    """
    dropped = tokens - math.isqrt(tokens) ** 2 if prefix is None else prefix
    side = math.isqrt(max(tokens - dropped, 0))
    if side < 1 or side * side != tokens - dropped:
        return None
    return dropped, side


def fold_tokens(values: torch.Tensor, prefix: int | None) -> torch.Tensor:
    """``(B, T, D)`` transformer tokens → ``(B, D, s, s)`` grid, dropping leading tokens.

    Args:
        values: Token outputs; any other shape is returned unchanged.
        prefix: Leading tokens to drop; ``None``: ``T - s*s`` for the largest ``s*s <= T``.

    Raises:
        ValueError: The remaining tokens are not a square number.
    """
    if values.dim() != 3:
        return values
    tokens = int(values.shape[1])
    grid = token_grid(tokens, prefix)
    if grid is None:
        raise ValueError(
            f"{tokens} tokens less {prefix or 0} leading ones is not a square grid; "
            f"set token-prefix to the number of class/register tokens"
        )
    dropped, side = grid
    folded = values[:, dropped:, :].transpose(1, 2)
    return folded.reshape(values.shape[0], values.shape[2], side, side)


class ExplainContext:
    """The model as the methods see it, with the batch sizes measured for this device.

    Args:
        model: The loaded model.
        kind: How its output is read (see :func:`auditor.load.class_scores`).
        layer: Target layer of the layer methods, or ``None``.
        settings: Method settings.
        preprocessing: How images in [0, 1] become model inputs.
        guided: Whether gradient passes include the guided backward pass.
        head: Whether gradient passes tap the GAP + linear head's feature map.
        gradients: Whether gradient passes run the plain backward pass (CAM and
            Score-CAM read activations only).

    Attributes:
        forward_batch: Images per forward pass without gradients (measured).
        backward_batch: Images per forward+backward pass (measured).
        layer_channels: Channels of the target layer (set after the first passes).
        mean_colour: ``(C,)`` mean colour in [0, 1] of the explained images.
    """

    def __init__(
        self,
        model: LoadedModel,
        kind: OutputKind,
        layer: str | None,
        settings: ExplainSettings,
        preprocessing: Preprocessing,
        guided: bool = False,
        head: bool = False,
        gradients: bool = True,
    ) -> None:
        self.model = model
        self.preprocessing = preprocessing
        self.kind = kind
        self.layer = layer
        self.settings = settings
        self.guided = guided
        self.gradients = gradients
        self.head: LinearHead | None = model.tapped.linear_head[0] if head else None
        self.forward_batch = 32
        self.backward_batch = 32
        self._relus = model.tapped.relu_addresses()
        self.layer_channels = 0
        self.mean_colour: torch.Tensor | None = None

    def with_model(self, model: LoadedModel) -> ExplainContext:
        """The same context on another model of the same graph (e.g. a randomised copy).

        Batch sizes, the layer's channel count and the mean colour carry over.
        """
        other = ExplainContext(
            model,
            self.kind,
            self.layer,
            self.settings,
            self.preprocessing,
            guided=self.guided,
            head=self.head is not None,
            gradients=self.gradients,
        )
        other.forward_batch = self.forward_batch
        other.backward_batch = self.backward_batch
        other.layer_channels = self.layer_channels
        other.mean_colour = self.mean_colour
        return other

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``(..., C, H, W)`` images in [0, 1] → model inputs."""
        return self.preprocessing.normalise(images)

    def class_scores(self, inputs: torch.Tensor) -> torch.Tensor:
        """``(N, K)`` scores of every class for ``(N, C, H, W)`` inputs (Captum's forward)."""
        return class_scores(self.model.module(inputs), self.kind)

    def passes(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        guided: bool | None = None,
        gradients: bool | None = None,
    ) -> GradientPasses:
        """One forward pass, the plain backward pass and (if set) the guided one.

        Args:
            inputs: ``(B, C, H, W)`` normalised inputs on the model's device.
            targets: ``(B,)`` class indices to explain.
            guided: Whether to run the guided backward pass; ``None``: as constructed.
            gradients: Whether to run the plain backward pass (without it the gradients
                are empty and the forward pass keeps no autograd graph); ``None``: as
                constructed.
        """
        inputs = inputs.detach().clone().requires_grad_(True)
        paths = [self.layer] if self.layer else []
        relus = list(self._relus) if (self.guided if guided is None else guided) else []
        addresses = ([self.head.address] if self.head else []) + relus
        if not relus and not (self.gradients if gradients is None else gradients):
            with torch.no_grad():
                _, taps = self.model.tapped(inputs, paths, addresses)
            return self._package(inputs, targets, taps, len(paths), (), torch.empty(0))
        with torch.enable_grad():
            output, taps = self.model.tapped(inputs, paths, addresses)
            score = target_scores(output, self.kind, targets).sum()
            layer_taps = taps[: len(paths)]
            grads = torch.autograd.grad(score, [inputs, *layer_taps], retain_graph=bool(relus))
            guided_grads = torch.empty(0, device=inputs.device)
            if relus:
                handles = [
                    relu.register_hook(lambda grad: grad.clamp(min=0))
                    for relu in taps[len(paths) + (1 if self.head else 0) :]
                ]
                try:
                    (guided_grads,) = torch.autograd.grad(score, [inputs])
                finally:
                    for handle in handles:
                        handle.remove()
        return self._package(inputs, targets, taps, len(paths), grads, guided_grads)

    def _package(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        taps: list[torch.Tensor],
        n_paths: int,
        grads: tuple[torch.Tensor, ...],
        guided_grads: torch.Tensor,
    ) -> GradientPasses:
        empty = torch.empty(0, device=inputs.device)
        prefix = self.settings.token_prefix
        return GradientPasses(
            inputs=inputs.detach(),
            targets=targets,
            input_grads=grads[0] if grads else empty,
            activations=fold_tokens(taps[0].detach(), prefix) if n_paths else empty,
            activation_grads=fold_tokens(grads[1], prefix) if n_paths and grads else empty,
            guided_input_grads=guided_grads.to(inputs.device),
            head_features=taps[n_paths].detach() if self.head else empty,
        )


class Batch:
    """Images to explain together, with what the methods compute from them once.

    Args:
        inputs: ``(B, C, H, W)`` normalised inputs on the model's device.
        display: ``(B, C, H, W)`` images in [0, 1] (before normalisation), on the CPU.
        targets: ``(B,)`` class indices to explain, on the model's device.
        seeds: One seed per image, for the methods that draw random numbers.
        passes: The shared gradient passes, or ``None`` if no gradient method runs.
    """

    def __init__(
        self,
        inputs: torch.Tensor,
        display: torch.Tensor,
        targets: torch.Tensor,
        seeds: list[int],
        passes: GradientPasses | None = None,
    ) -> None:
        self.inputs = inputs
        self.display = display
        self.targets = targets
        self.seeds = seeds
        self.passes = passes
        self._superpixels: dict[int, list[torch.Tensor]] = {}

    def superpixels(self, n_segments: int) -> list[torch.Tensor]:
        """One ``(H, W)`` int64 SLIC segmentation per image, computed once per batch."""
        if n_segments not in self._superpixels:
            self._superpixels[n_segments] = [
                slic_segments(image, n_segments) for image in self.display
            ]
        return self._superpixels[n_segments]


class Method(ABC):
    """An explanation method.

    Subclasses set the class attributes and implement :meth:`raw_map`. ``needs_passes``:
    it reads the shared :class:`GradientPasses` (``needs_gradients``: their backward
    pass; ``needs_guided``: the guided one; ``needs_head``: the head's feature map);
    ``perturbation``: it runs passes of its own at the measured batch sizes. The steps in
    ``postprocessing`` (names from :data:`auditor.explain.postprocess.STEPS`) are then
    applied, and ``min-max`` only for display.
    """

    key: ClassVar[str]
    title: ClassVar[str]
    paper: ClassVar[str]
    postprocessing: tuple[str, ...]
    reading: ClassVar[str]
    caveat: ClassVar[str]
    implementation: ClassVar[str]
    uses_layer: bool = False
    needs_guided: bool = False
    needs_head: bool = False
    needs_passes: bool = False
    needs_gradients: bool = False
    perturbation: bool = False

    def __init__(self, settings: ExplainSettings) -> None:
        self.settings = settings

    def not_applicable(self, context: ExplainContext) -> str | None:
        """Why the method cannot run on this model, or ``None`` if it can."""
        if self.uses_layer and context.layer is None:
            return "the model has no layer with a spatial (C×H×W) or token output to explain"
        return None

    def passes_per_image(self, context: ExplainContext, size: tuple[int, int]) -> PassCount:
        """The passes it needs per image beyond the shared gradient passes."""
        return PassCount()

    def settings_text(self) -> str:
        """Its settings in words for the report ("" if it has none)."""
        return ""

    @abstractmethod
    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        """The map before post-processing: ``(B, h, w)`` or ``(B, C, H, W)``."""

    def postprocess(self, maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Apply :attr:`postprocessing`: ``(B, H, W)`` float32 at input resolution."""
        for step in self.postprocessing:
            maps = STEPS[step](maps, size) if step == "upsample-bilinear" else STEPS[step](maps)
        return maps.float()

    def attribute(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        """``(B, H, W)`` float32 map at input resolution, before min-max normalisation."""
        size = (int(batch.inputs.shape[-2]), int(batch.inputs.shape[-1]))
        return self.postprocess(self.raw_map(batch, context), size)


class GradientMethod(Method):
    """A method computed from the shared :class:`GradientPasses` alone."""

    needs_passes = True
    needs_gradients = True

    @abstractmethod
    def from_passes(self, passes: GradientPasses, context: ExplainContext) -> torch.Tensor:
        """The map before post-processing, from the passes of a batch."""

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        if batch.passes is None:
            raise RuntimeError(f"{self.key} needs the gradient passes, which were not computed")
        return self.from_passes(batch.passes, context)
