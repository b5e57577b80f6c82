"""The tap layer's interface, and the backend for a loaded model's format.

TorchScript modules are tapped through their inlined graph (:class:`TappedModel`),
``torch.export`` programs through their FX graph (:class:`TappedExport`); the stages see
only :class:`Taps`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch.fx import GraphModule

from auditor.taps.exported import TappedExport
from auditor.taps.head import HeadInput, LinearHead
from auditor.taps.model import ModuleEntry, ModuleSite, TappedModel

__all__ = ["Model", "Taps", "tap_model"]

Model = torch.jit.ScriptModule | GraphModule
"""A loaded model: a TorchScript module, or the ``module()`` of a functional
``torch.export`` program."""


class Taps(Protocol):
    """What the stages read from a model beyond its output (see :class:`TappedModel`)."""

    @property
    def module(self) -> Model: ...

    @property
    def linear_head(self) -> tuple[LinearHead | None, str]: ...

    @property
    def head_input(self) -> tuple[HeadInput | None, str]: ...

    @property
    def sites(self) -> list[ModuleSite]: ...

    def site(self, path: str) -> ModuleSite: ...

    def modules(self) -> list[ModuleEntry]: ...

    def relu_addresses(self) -> tuple[int, ...]: ...

    def first_convolution(self) -> tuple[torch.Tensor, bool] | None: ...

    def input_channels(self) -> int | None: ...

    def flops_by_module(self, inputs: torch.Tensor) -> tuple[int, dict[str, int]]: ...

    def __call__(
        self, inputs: torch.Tensor, paths: Sequence[str] = (), addresses: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...


def tap_model(module: Model) -> Taps:
    """The tap layer for ``module``, by its format.

    Raises:
        TypeError: ``module`` is neither TorchScript nor an exported program's module.
    """
    if isinstance(module, torch.jit.ScriptModule):
        return TappedModel(module)
    if isinstance(module, GraphModule):
        return TappedExport(module)
    raise TypeError(
        f"module must be a TorchScript module or an exported program's module(), "
        f"not {type(module).__name__}"
    )
