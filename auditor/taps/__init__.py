"""Reach inside a TorchScript or ``torch.export`` graph: module outputs, their gradients,
the classifier head.

The only package that touches PyTorch's private graph APIs (``torch._C``, FX node
metadata), but for :mod:`auditor.pt2`'s checks of a loaded program's inputs and mode;
see :mod:`auditor.taps.model` and :mod:`auditor.taps.exported` for how values are tapped
without hooks.
"""

from auditor.taps.backend import Model, Taps, tap_model
from auditor.taps.exported import TappedExport
from auditor.taps.head import LinearHead
from auditor.taps.model import ModuleEntry, ModuleSite, TappedModel

__all__ = [
    "LinearHead",
    "Model",
    "ModuleEntry",
    "ModuleSite",
    "TappedExport",
    "TappedModel",
    "Taps",
    "tap_model",
]
