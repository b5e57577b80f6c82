"""Reach inside a TorchScript graph: module outputs and their gradients, without hooks.

A model loaded with :func:`torch.jit.load` has no Python class and rejects
``register_forward_hook``, so Captum's layer methods and pytorch-grad-cam cannot
see its intermediate activations. This module is Auditor's own answer (no library
does this); it is the only place that touches PyTorch's private graph API, so that a
change in PyTorch breaks exactly one module with its own tests (``tests/test_taps.py``).

How it works (see ``shared/DESIGN.md``):

1. Copy the forward graph and inline every submodule call, so each node answers
   ``getModuleHierarchy()`` (``SELF(ResNet).layer4(Sequential).1(BasicBlock)...`` for
   scripted modules, ``layer4(Sequential).1(BasicBlock)...`` for traced ones).
2. Remove in-place mutation where that is safe, so that the value a module produced is
   not overwritten afterwards by an in-place op outside it (``F.relu(x, inplace=True)``
   right after ``features`` in DenseNet).
3. A module's output is the last tensor produced inside its dotted path that is used
   outside it. When one value is the output of several nested modules it is named
   after the outermost (``layer4`` rather than ``layer4.1.relu``).
4. To tap values, the graph's output is replaced by a tuple ``(original, *tapped)``
   and compiled into a callable with ``torch._C._create_function_from_graph``.
5. The callable runs with graph optimisation off: the profiling executor would
   otherwise, from the second call on, return tapped values from a differentiable
   subgraph whose gradients no longer reach them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ModuleSite", "TappedModel"]

_FRAME = re.compile(r"^(?P<name>[^()]*)\((?P<type>[^()]*)\)$")


@dataclass(frozen=True)
class ModuleSite:
    """A submodule whose output can be tapped.

    Attributes:
        path: Dotted module path, e.g. ``"layer4.1.conv2"``.
        type_name: The module's class name, e.g. ``"Conv2d"``.
        order: Position of the output value in execution order (larger is later).
    """

    path: str
    type_name: str
    order: int


def _module_frames(node: torch._C.Node) -> list[tuple[str, str]]:
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


def _is_tensor(value: torch._C.Value) -> bool:
    return isinstance(value.type(), torch._C.TensorType)


def _fold_scalar_attributes(graph: Any, module: torch.jit.ScriptModule) -> None:
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


_CONVOLUTIONS = frozenset(
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
_PRODUCTS = frozenset({"aten::linear", "aten::matmul", "aten::mm", "aten::bmm", "aten::addmm"})


def _is_transposed(node: torch._C.Node) -> bool:
    if node.kind() == "aten::_convolution":
        flag = node.inputsAt(6).toIValue()
        return bool(flag)
    return "transpose" in node.kind()


def _attribute_tensor(value: torch._C.Value, module: torch.jit.ScriptModule) -> torch.Tensor | None:
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


def _addressable(graph: torch._C.Graph) -> list[torch._C.Value]:
    """Graph inputs, then every top-level node's outputs: the same order in any copy."""
    values = list(graph.inputs())
    for node in graph.nodes():
        values.extend(node.outputs())
    return values


def _top_level(node: torch._C.Node, graph: torch._C.Graph) -> torch._C.Node:
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


def _returns_alias(node: torch._C.Node) -> bool:
    """Whether ``node`` may return a view or alias of an input (or has no aten schema)."""
    if not node.kind().startswith("aten::"):
        return True
    try:
        schema = node.schema()
    except RuntimeError:
        return True
    return "-> Tensor(" in schema or "-> (Tensor(" in schema


def _functionalize_fresh_inplace(graph: Any) -> None:
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
        if _returns_alias(mutated.node()) or mutated.node().owningBlock() != graph.block():
            continue
        later_use = any(
            use.user != node and not _top_level(use.user, graph).isBefore(node)
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


class TappedModel:
    """A TorchScript module whose submodule outputs can be returned next to its output.

    Args:
        module: A scripted or traced module (from ``torch.jit.script``, ``torch.jit.trace``
            or ``torch.jit.load``), on any device.

    Example:
        >>> tapped = TappedModel(torch.jit.load("model.pt"))
        >>> logits, (features,) = tapped(images, ["layer4"])
    """

    def __init__(self, module: torch.jit.ScriptModule) -> None:
        self.module = module
        # torch._C's type stubs lack much of the graph API used here: typed as Any.
        self._graph: Any = module.forward.graph.copy()  # type: ignore[attr-defined]
        torch._C._jit_pass_inline(self._graph)
        _fold_scalar_attributes(self._graph, module)
        torch._C._jit_pass_remove_mutation(self._graph)
        _functionalize_fresh_inplace(self._graph)
        self._sites: dict[str, tuple[ModuleSite, int]] = {}
        self._functions: dict[tuple[int, ...], Any] = {}
        self._address = {v.unique(): i for i, v in enumerate(_addressable(self._graph))}
        self._find_sites()

    def _find_sites(self) -> None:
        nodes = list(self._graph.nodes())
        frames_of = {node: _module_frames(node) for node in nodes}
        paths = {node: tuple(name for name, _ in frames) for node, frames in frames_of.items()}
        order = 0
        for node, frames in frames_of.items():
            if not frames:
                continue
            for value in node.outputs():
                if not _is_tensor(value):
                    continue
                order += 1
                user_paths = [self._user_path(use.user, paths) for use in value.uses()]
                # One value can be the output of several nested modules (layer4,
                # layer4.1, layer4.1.relu); each of them may be tapped. A module called
                # more than once keeps its last call.
                for depth in range(1, len(frames) + 1):
                    prefix = tuple(name for name, _ in frames[:depth])
                    if all(user[:depth] == prefix for user in user_paths):
                        continue
                    path = ".".join(prefix)
                    site = ModuleSite(path=path, type_name=frames[depth - 1][1], order=order)
                    self._sites[path] = (site, self._address[value.unique()])

    @staticmethod
    def _user_path(
        node: torch._C.Node, paths: dict[torch._C.Node, tuple[str, ...]]
    ) -> tuple[str, ...]:
        # Users inside sub-blocks (prim::If, prim::Loop) are looked up on demand.
        if node in paths:
            return paths[node]
        return tuple(name for name, _ in _module_frames(node))

    @property
    def sites(self) -> list[ModuleSite]:
        """Every tappable submodule, in the order their outputs are produced."""
        return sorted((site for site, _ in self._sites.values()), key=lambda s: s.order)

    def site(self, path: str) -> ModuleSite:
        """The site at ``path``.

        Raises:
            KeyError: ``path`` names no tappable module; the message lists close names.
        """
        if path not in self._sites:
            close = [p for p in self._sites if p.startswith(path.split(".")[0])][:5]
            hint = f"; modules with that prefix: {', '.join(close)}" if close else ""
            raise KeyError(f"module {path!r} has no tappable output in this model{hint}")
        return self._sites[path][0]

    def _function(self, addresses: tuple[int, ...]) -> Any:
        """A compiled forward that returns ``(output, *values)`` for the values at ``addresses``."""
        if addresses not in self._functions:
            graph = self._graph.copy()
            addressable = _addressable(graph)
            original = next(graph.outputs())
            graph.eraseOutput(0)
            values = [original, *(addressable[a] for a in addresses)]
            tuple_node = graph.create("prim::TupleConstruct", values)
            tuple_node.output().setType(torch._C.TupleType([v.type() for v in values]))
            graph.appendNode(tuple_node)
            graph.registerOutput(tuple_node.output())
            self._functions[addresses] = torch._C._create_function_from_graph(
                "tapped_forward", graph
            )
        return self._functions[addresses]

    def _run(
        self, inputs: torch.Tensor, addresses: tuple[int, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # The optimising executor moves tapped values into a DifferentiableGraph whose
        # extra outputs are cut off from the score's autograd graph (gradients w.r.t. them
        # fail from the second call on). Run the graph as written: same speed here.
        with torch.jit.optimized_execution(False):
            result = self._function(addresses)(self.module._c, inputs)
        if not isinstance(result, tuple):
            raise TypeError(f"tapped forward returned {type(result).__name__}, not a tuple")
        output, *taps = result
        return output, taps

    def input_channels(self) -> int | None:
        """The number of input channels of the first convolution, or ``None`` if there is none."""
        for node in self._graph.nodes():
            if node.kind() in _CONVOLUTIONS:
                weight = _attribute_tensor(node.inputsAt(1), self.module)
                if weight is not None and weight.dim() >= 3:
                    transposed = _is_transposed(node)
                    return int(weight.shape[0] if transposed else weight.shape[1])
                return None
        return None

    def flops_by_module(self, inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
        """Count multiply-accumulate FLOPs (2 per MAC) of convolutions and matrix products.

        Counts the same operations as :class:`torch.utils.flop_counter.FlopCounterMode`
        (convolutions, ``linear``, ``matmul``/``mm``/``bmm``/``addmm``), but attributed to
        the module that runs them, which FlopCounterMode cannot do without hooks.

        Args:
            inputs: ``(B, C, H, W)`` example input; FLOPs are for the whole batch.

        Returns:
            The total, and for every module path (every ancestor included) its FLOPs.
        """
        counted = [n for n in self._graph.nodes() if n.kind() in _CONVOLUTIONS | _PRODUCTS]
        addresses = tuple(
            self._address[value.unique()]
            for node in counted
            for value in (node.inputsAt(0), node.inputsAt(1), node.output())
        )
        with torch.no_grad():
            _, values = self._run(inputs, addresses)
        total = 0
        per_module: dict[str, int] = {}
        for i, node in enumerate(counted):
            first, second, out = values[3 * i : 3 * i + 3]
            if node.kind() in _CONVOLUTIONS:
                spatial = first.shape[2:] if _is_transposed(node) else out.shape[2:]
                flops = 2 * out.shape[0] * second.numel() * int(torch.Size(spatial).numel())
            elif node.kind() in ("aten::linear", "aten::addmm"):
                flops = 2 * out.numel() * second.shape[-1]
            else:
                flops = 2 * out.numel() * first.shape[-1]
            total += flops
            frames = [name for name, _ in _module_frames(node)]
            for depth in range(1, len(frames) + 1):
                path = ".".join(frames[:depth])
                per_module[path] = per_module.get(path, 0) + flops
        return total, per_module

    def __call__(
        self, inputs: torch.Tensor, paths: Sequence[str] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model and return its output and the outputs of ``paths``.

        Args:
            inputs: ``(B, C, H, W)`` float tensor on the module's device.
            paths: Dotted module paths to tap, as listed by :attr:`sites`.

        Returns:
            The model's output and one tensor per path, in the order asked. The tapped
            tensors are part of the autograd graph: ``torch.autograd.grad(score, taps)``
            gives gradients with respect to them.

        Raises:
            KeyError: A path names no tappable module.
        """
        key = tuple(paths)
        addresses = tuple(self._sites[self.site(path).path][1] for path in key)
        return self._run(inputs, addresses)
