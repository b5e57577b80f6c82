"""Reach inside a TorchScript graph: module outputs, their gradients, the classifier head.

The only package that touches PyTorch's private graph API (``torch._C``); see
:mod:`auditor.taps.model` for how values are tapped without hooks.
"""

from auditor.taps.head import LinearHead
from auditor.taps.model import ModuleSite, TappedModel

__all__ = ["LinearHead", "ModuleSite", "TappedModel"]
