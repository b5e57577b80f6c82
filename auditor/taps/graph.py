"""Graph passes and helpers on inlined TorchScript graphs (private torch APIs).

Used by :class:`auditor.taps.TappedModel` and :mod:`auditor.taps.head`; nothing outside
:mod:`auditor.taps` touches ``torch._C``.
"""

from __future__ import annotations

import re
from typing import Any

import torch

_FRAME = re.compile(r"^(?P<name>[^()]*)\((?P<type>[^()]*)\)$")


def module_frames(node: torch._C.Node) -> list[tuple[str, str]]:
    """The (name, type) module frames of a node, outermost first, without function frames."""
    hierarchy: str = node.getModuleHierarchy()
    frames: list[tuple[str, str]] = []
    for part in hierarchy.split(".") if hierarchy else []:
        match = _FRAME.match(part)
        if match is None:
            break
        name, type_name = match["name"], match["type"]
        if name == "SELF" and not frames and type_name != "UNKNOWN_TYPE":
            continue  # the root module of a scripted graph
        if name in ("SELF", "UNKNOWN_INSTANCE"):
            break  # a function called inside the module, not a submodule
        frames.append((name, type_name))
    return frames


def is_tensor(value: torch._C.Value) -> bool:
    return isinstance(value.type(), torch._C.TensorType)


def fold_scalar_attributes(graph: Any, module: torch.jit.ScriptModule) -> None:
    """Replace reads of bool, int and float attributes by constants, then fold branches.

    Scripted modules keep flags such as ``training`` or torchvision's
    ``use_res_connect`` as attributes, so ``if self.use_res_connect: out += x`` stays a
    ``prim::If`` whose in-place add would overwrite a tapped value. The audit runs the
    model as it is now (in eval mode), so these flags are constants for it.
    """
    self_value = next(graph.inputs())
    owners: dict[str, Any] = {self_value.debugName(): module}
    # Folding a branch can expose attribute reads that were inside it: repeat until stable.
    for _ in range(8):
        folded = 0
        for node in graph.findAllNodes("prim::GetAttr", True):
            owner = owners.get(node.input().debugName())
            if owner is None:
                continue
            value = getattr(owner, node.s("name"))
            if isinstance(value, torch.jit.ScriptModule):
                owners[node.output().debugName()] = value
            elif isinstance(value, bool | int | float) and node.output().uses():
                constant = graph.insertConstant(value)
                constant.node().moveBefore(node)
                node.output().replaceAllUsesWith(constant)
                folded += 1
        torch._C._jit_pass_constant_propagation(graph)
        torch._C._jit_pass_dce(graph)
        if not folded:
            break


CONVOLUTIONS = frozenset(
    {
        "aten::_convolution",
        "aten::conv1d",
        "aten::conv2d",
        "aten::conv3d",
        "aten::conv_transpose1d",
        "aten::conv_transpose2d",
        "aten::conv_transpose3d",
    }
)
PRODUCTS = frozenset({"aten::linear", "aten::matmul", "aten::mm", "aten::bmm", "aten::addmm"})


def is_transposed(node: torch._C.Node) -> bool:
    if node.kind() == "aten::_convolution":
        flag = node.inputsAt(6).toIValue()
        return bool(flag)
    return "transpose" in node.kind()


def attribute_tensor(value: torch._C.Value, module: torch.jit.ScriptModule) -> torch.Tensor | None:
    """The parameter or buffer a ``prim::GetAttr`` chain from ``self`` reads, if it is one."""
    names: list[str] = []
    node = value.node()
    while node.kind() == "prim::GetAttr":
        names.append(node.s("name"))
        node = node.input().node()
    if node.kind() != "prim::Param" or not names:
        return None
    owner: Any = module
    for name in reversed(names):
        owner = getattr(owner, name)
    return owner if isinstance(owner, torch.Tensor) else None


def addressable(graph: torch._C.Graph) -> list[torch._C.Value]:
    """Graph inputs, then every top-level node's outputs: the same order in any copy."""
    values = list(graph.inputs())
    for node in graph.nodes():
        values.extend(node.outputs())
    return values


def top_level(node: torch._C.Node, graph: torch._C.Graph) -> torch._C.Node:
    """The node of ``graph``'s top block that contains ``node`` (itself if top-level).

    Blocks and nodes compare by identity; pybind11 hands out one wrapper per live C++
    object, so ``top`` (held here) and ``owningBlock()`` are the same object.
    """
    top = graph.block()
    while node.owningBlock() != top:
        parent = node.owningBlock().owningNode()
        if parent is None:
            break
        node = parent
    return node


def returns_alias(node: torch._C.Node) -> bool:
    """Whether ``node`` may return a view or alias of an input (or has no aten schema)."""
    if not node.kind().startswith("aten::"):
        return True
    try:
        schema = node.schema()
    except RuntimeError:
        return True
    return "-> Tensor(" in schema or "-> (Tensor(" in schema


def functionalize_fresh_inplace(graph: Any) -> None:
    """Rewrite ``x.op_(...)`` as ``op(x, ...)`` where no later code can observe the difference.

    ``torch._C._jit_pass_remove_mutation`` leaves some in-place ops (``out += identity``
    in torchvision's ResNet blocks), which would overwrite the tapped output of the
    module that produced ``x``. The rewrite is done only when ``x`` is a fresh tensor
    (its producer returns no view or alias, so no other tensor shares its memory) and
    nothing uses ``x`` after the in-place op.
    """
    for node in list(graph.nodes()):
        kind = node.kind()
        if not kind.startswith("aten::") or not kind.endswith("_") or kind.endswith("__"):
            continue
        if node.inputsSize() == 0 or node.outputsSize() != 1:
            continue
        mutated = node.inputsAt(0)
        if returns_alias(mutated.node()) or mutated.node().owningBlock() != graph.block():
            continue
        later_use = any(
            use.user != node and not top_level(use.user, graph).isBefore(node)
            for use in mutated.uses()
        )
        if later_use:
            continue
        functional = graph.create(kind[:-1], list(node.inputs()))
        functional.copyMetadata(node)
        functional.insertBefore(node)
        try:
            functional.schema()
        except RuntimeError:  # no out-of-place twin with this signature
            functional.destroy()
            continue
        functional.output().setType(node.output().type())
        node.output().replaceAllUsesWith(functional.output())
        node.destroy()
