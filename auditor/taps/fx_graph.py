"""Helpers on the FX graph of a ``torch.export`` program, and its classifier head.

The FX twin of :mod:`auditor.taps.graph` and :mod:`auditor.taps.head`, used by
:class:`auditor.taps.TappedExport`. Nodes of an exported program carry their module
hierarchy in ``node.meta["nn_module_stack"]``: ``{key: (dotted path, class name)}``,
outermost first, the root module with the path ``""``. The program must be functional
(``ExportedProgram.run_decompositions({})``), so that no in-place op overwrites a tapped
value after the module that produced it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.fx import GraphModule, Node

from auditor.taps.graph import CONVOLUTIONS as SCRIPT_CONVOLUTIONS
from auditor.taps.head import HeadInput, LinearHead

__all__ = [
    "CONVOLUTIONS",
    "RELUS",
    "attribute_tensor",
    "find_head_input",
    "find_linear_head",
    "is_tensor",
    "is_transposed",
    "module_frames",
    "op_name",
]

CONVOLUTIONS = SCRIPT_CONVOLUTIONS | {"aten::convolution"}
"""TorchScript's convolution operators, and the one an exported graph may hold after
decompositions."""
RELUS = frozenset({"aten::relu", "aten::relu_"})
_SHAPE_ONLY = frozenset(
    {
        "aten::flatten",
        "aten::view",
        "aten::_unsafe_view",
        "aten::reshape",
        "aten::squeeze",
        "aten::contiguous",
        "aten::clone",
        "aten::alias",
        "aten::dropout",
        "aten::feature_dropout",
        "aten::alpha_dropout",
        "aten::feature_alpha_dropout",
    }
)
_SPATIAL_DIMS = ({2, 3}, {-1, -2})
_OUTPUT_ACTIVATIONS = frozenset(
    {"aten::softmax", "aten::_softmax", "aten::log_softmax", "aten::_log_softmax", "aten::sigmoid"}
)
_LINEAR = frozenset({"aten::linear", "aten::addmm", "aten::mm", "aten::matmul"})


def op_name(node: Node) -> str:
    """``"aten::conv2d"`` for a node calling ``torch.ops.aten.conv2d.default``; ``""`` else."""
    if node.op != "call_function" or not isinstance(node.target, torch._ops.OpOverload):
        return ""
    return node.target.name().split(".")[0]


def module_frames(node: Node) -> list[tuple[str, str]]:
    """The (dotted path, class name) module frames of a node, outermost first, root excluded.

    Paths are full (``"layer4.1.conv2"``), not one name per level as in TorchScript.
    A stack that does not start at the root module is none: passes that add nodes
    (the guard check ``_guards_fn``, ``sym_size``) give them a placeholder stack.
    """
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    if not stack or stack[0][0] != "":
        return []
    frames = []
    for path, type_ in stack[1:]:
        name = getattr(type_, "__name__", None) or str(type_).rsplit(".", 1)[-1]
        frames.append((str(path), name))
    return frames


def is_tensor(node: Node) -> bool:
    """Whether ``node`` produces one tensor (its traced example value is a tensor)."""
    return isinstance(node.meta.get("val"), torch.Tensor)


def attribute_tensor(node: Any, module: GraphModule) -> torch.Tensor | None:
    """The parameter or buffer a ``get_attr`` node reads, if it is one."""
    if not isinstance(node, Node) or node.op != "get_attr":
        return None
    owner: Any = module
    for name in str(node.target).split("."):
        owner = getattr(owner, name, None)
    return owner if isinstance(owner, torch.Tensor) else None


def is_transposed(node: Node) -> bool:
    """Whether a convolution node is a transposed convolution."""
    if op_name(node) in ("aten::convolution", "aten::_convolution"):
        return bool(node.args[6])
    return "transpose" in op_name(node)


def _skip_shape_ops(node: Any) -> Any:
    while isinstance(node, Node) and op_name(node) in _SHAPE_ONLY:
        node = node.args[0]
    return node


def _output_value(graph: torch.fx.Graph) -> Any:
    """The model's (first) output value: the output node's first leaf."""
    value = graph.output_node().args[0]
    while isinstance(value, tuple | list) and value:
        value = value[0]
    return value


def _linear_parts(node: Node, module: GraphModule) -> tuple[Any, torch.Tensor | None]:
    """The input and weight of a linear layer node (``linear`` or ``addmm(b, x, t(w))``)."""
    if op_name(node) == "aten::linear":
        return node.args[0], attribute_tensor(node.args[1], module)
    if op_name(node) in ("aten::addmm", "aten::mm"):  # addmm(b, x, t(w)); mm(x, t(w))
        read, transposed = node.args[-2:]
        if isinstance(transposed, Node) and op_name(transposed) in ("aten::t", "aten::permute"):
            return read, attribute_tensor(transposed.args[0], module)
        return read, None
    return node.args[0], None


def _pooled_input(node: Any) -> Node | None:
    """The 4-D input of a global average pool, or ``None`` if ``node`` is none."""
    if not isinstance(node, Node):
        return None
    pool = ("aten::adaptive_avg_pool2d", "aten::_adaptive_avg_pool2d")
    if op_name(node) in pool and list(node.args[1]) in ([1, 1], [1]):  # type: ignore[arg-type]
        return node.args[0]  # type: ignore[return-value]
    dims = node.args[1] if op_name(node) == "aten::mean" and len(node.args) >= 2 else None
    if isinstance(dims, list | tuple) and set(dims) in _SPATIAL_DIMS:
        return node.args[0]  # type: ignore[return-value]
    return None


def find_linear_head(
    module: GraphModule, address: dict[Node, int]
) -> tuple[LinearHead | None, str]:
    """The model's GAP + linear head, or ``None`` and the reason there is none (see
    :func:`auditor.taps.head.find_linear_head`; ``address``: node → position)."""
    last = _skip_shape_ops(_output_value(module.graph))
    kind = op_name(last) if isinstance(last, Node) else "none"
    if kind not in ("aten::linear", "aten::addmm", "aten::mm"):
        return None, (
            f"the output is not produced by a linear layer (the last operation is "
            f"{kind.split('::')[-1]})"
        )
    read, weight = _linear_parts(last, module)
    if weight is None:
        return None, "the output's linear layer has no weight parameter"
    pooled = _skip_shape_ops(read)
    features = _pooled_input(pooled)
    if features is None or features not in address:
        source = op_name(pooled) if isinstance(pooled, Node) else "an input"
        return None, (
            "the linear layer's input is not a global average pooling of a feature map "
            f"(it comes from {source.split('::')[-1]})"
        )
    return LinearHead(weight=weight.detach(), address=address[features]), ""


def find_head_input(module: GraphModule, address: dict[Node, int]) -> tuple[HeadInput | None, str]:
    """The value the last linear layer reads (see :func:`auditor.taps.head.find_head_input`)."""
    value = _skip_shape_ops(_output_value(module.graph))
    while isinstance(value, Node) and op_name(value) in _OUTPUT_ACTIVATIONS:
        value = _skip_shape_ops(value.args[0])
    kind = op_name(value) if isinstance(value, Node) else "none"
    if kind not in _LINEAR:
        return None, (
            f"the output is not produced by a linear layer (the last operation is "
            f"{kind.split('::')[-1]}); declare embedding-layer"
        )
    read, _ = _linear_parts(value, module)
    if read not in address:
        return None, "the head's input is not a tensor of the graph; declare embedding-layer"
    frames = module_frames(value)
    return HeadInput(address[read], frames[-1][0] if frames else ""), ""
