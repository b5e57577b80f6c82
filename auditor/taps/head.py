"""Find a global-average-pooling + linear classifier head in a TorchScript graph.

Class activation mapping (CAM, Zhou et al., 2016) is defined only for such a head:
``logits = W · mean_{h,w}(A) + b``, so that ``CAM_c = Σ_k W[c, k] A_k``. The head is read
from the inlined graph, walking back from the output through shape-only operations
(flatten, view, reshape, squeeze, dropout in eval mode), so it works on scripted and
traced models alike without the model's Python class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from auditor.taps.graph import attribute_tensor, module_frames

__all__ = ["HeadInput", "LinearHead", "find_head_input", "find_linear_head"]

_SHAPE_ONLY = frozenset(
    {
        "aten::flatten",
        "aten::view",
        "aten::reshape",
        "aten::squeeze",
        "aten::contiguous",
        "aten::dropout",
        "aten::feature_dropout",
        "aten::alpha_dropout",
        "aten::feature_alpha_dropout",
    }
)
_SHAPE_ONLY = _SHAPE_ONLY | {kind + "_" for kind in _SHAPE_ONLY if "dropout" in kind}
_SPATIAL_DIMS = ({2, 3}, {-1, -2})
_OUTPUT_ACTIVATIONS = frozenset(
    {"aten::softmax", "aten::log_softmax", "aten::sigmoid", "aten::sigmoid_", "aten::_softmax"}
)


@dataclass(frozen=True)
class LinearHead:
    """A global-average-pooling + linear head.

    Attributes:
        weight: ``(K, D)`` weights of the linear layer (``K`` outputs, ``D`` channels).
        address: Position of the pooled feature map ``(B, D, h, w)`` among the graph's
            addressable values (see :meth:`auditor.taps.TappedModel.__call__`).
    """

    weight: torch.Tensor
    address: int


def _skip_shape_ops(value: Any) -> Any:
    while value.node().kind() in _SHAPE_ONLY:
        value = value.node().inputsAt(0)
    return value


def _linear_weight(node: Any, module: torch.jit.ScriptModule) -> torch.Tensor | None:
    if node.kind() == "aten::linear":
        return attribute_tensor(node.inputsAt(1), module)
    if node.kind() == "aten::addmm":  # addmm(bias, x, weight.t())
        transposed = node.inputsAt(2).node()
        if transposed.kind() == "aten::t":
            return attribute_tensor(transposed.inputsAt(0), module)
    return None


def _pooled_input(node: Any) -> Any | None:
    """The 4-D input of a global average pool, or ``None`` if ``node`` is none."""
    if node.kind() == "aten::adaptive_avg_pool2d":
        size = node.inputsAt(1).toIValue()
        if size is not None and list(size) in ([1, 1], [1]):
            return node.inputsAt(0)
    if node.kind() == "aten::mean" and node.inputsSize() >= 2:
        dims = node.inputsAt(1).toIValue()
        if dims is not None and set(dims) in _SPATIAL_DIMS:
            return node.inputsAt(0)
    return None


def find_linear_head(
    graph: Any, module: torch.jit.ScriptModule, address: dict[int, int]
) -> tuple[LinearHead | None, str]:
    """The model's GAP + linear head, or ``None`` and the reason there is none.

    Args:
        graph: The inlined, folded forward graph.
        module: The scripted module (to read the linear layer's weight).
        address: Value ``unique()`` → position among the addressable values.
    """
    output = next(graph.outputs())
    last = _skip_shape_ops(output).node()
    weight = _linear_weight(last, module)
    if weight is None:
        return None, (
            f"the output is not produced by a linear layer (the last operation is "
            f"{last.kind().split('::')[-1]})"
        )
    pooled = _skip_shape_ops(last.inputsAt(1 if last.kind() == "aten::addmm" else 0))
    features = _pooled_input(pooled.node())
    if features is None:
        return None, (
            "the linear layer's input is not a global average pooling of a feature map "
            f"(it comes from {pooled.node().kind().split('::')[-1]})"
        )
    if features.unique() not in address:
        return None, "the pooled feature map is computed inside a branch and cannot be tapped"
    return LinearHead(weight=weight.detach(), address=address[features.unique()]), ""


@dataclass(frozen=True)
class HeadInput:
    """The input of the classifier's last linear layer: the model's embedding.

    Attributes:
        address: Its position among the graph's addressable values.
        module: The dotted path of the linear layer (``"fc"``, ``"heads.head"``), or ""
            when it is not inside a module.
    """

    address: int
    module: str


def find_head_input(graph: Any, address: dict[int, int]) -> tuple[HeadInput | None, str]:
    """The value the last linear layer reads (through shape-only operations and a final
    softmax or sigmoid from the output), or ``None`` and why there is none. For a global
    average pooling head it is the pooled ``(B, D)`` vector; for a vision transformer,
    the class token before the head."""
    value = _skip_shape_ops(next(graph.outputs()))
    while value.node().kind() in _OUTPUT_ACTIVATIONS:
        value = _skip_shape_ops(value.node().inputsAt(0))
    last = value.node()
    if last.kind() not in ("aten::linear", "aten::addmm", "aten::matmul"):
        return None, (
            f"the output is not produced by a linear layer (the last operation is "
            f"{last.kind().split('::')[-1]}); declare embedding-layer"
        )
    read = last.inputsAt(1 if last.kind() == "aten::addmm" else 0)
    if read.unique() not in address:
        return None, "the head's input is computed inside a branch; declare embedding-layer"
    module = ".".join(name for name, _ in module_frames(last))
    return HeadInput(address[read.unique()], module), ""
