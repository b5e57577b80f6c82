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


def _fold_scalar_attributes(graph: torch._C.Graph, module: torch.jit.ScriptModule) -> None:
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


def _top_level(node: torch._C.Node, graph: torch._C.Graph) -> torch._C.Node:
    """The node of ``graph``'s top block that contains ``node`` (itself if top-level)."""
    top = graph.block()
    while node.owningBlock() != top:
        node = node.owningBlock().owningNode()
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


def _functionalize_fresh_inplace(graph: torch._C.Graph) -> None:
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
        self._graph = module.forward.graph.copy()
        torch._C._jit_pass_inline(self._graph)
        _fold_scalar_attributes(self._graph, module)
        torch._C._jit_pass_remove_mutation(self._graph)
        _functionalize_fresh_inplace(self._graph)
        self._sites: dict[str, tuple[ModuleSite, int, int]] = {}
        self._functions: dict[tuple[str, ...], Any] = {}
        self._find_sites()

    def _find_sites(self) -> None:
        nodes = list(self._graph.nodes())
        paths = {node: tuple(name for name, _ in _module_frames(node)) for node in nodes}
        order = 0
        for node_index, node in enumerate(nodes):
            frames = _module_frames(node)
            if not frames:
                continue
            for output_index, value in enumerate(node.outputs()):
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
                    self._sites[path] = (site, node_index, output_index)

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
        return sorted((site for site, _, _ in self._sites.values()), key=lambda s: s.order)

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

    def _function(self, paths: tuple[str, ...]) -> Any:
        if paths not in self._functions:
            graph = self._graph.copy()
            nodes = list(graph.nodes())
            tapped = [
                nodes[self._sites[p][1]].outputsAt(self._sites[p][2]) for p in paths
            ]
            original = next(graph.outputs())
            graph.eraseOutput(0)
            values = [original, *tapped]
            tuple_node = graph.create("prim::TupleConstruct", values)
            tuple_node.output().setType(torch._C.TupleType([v.type() for v in values]))
            graph.appendNode(tuple_node)
            graph.registerOutput(tuple_node.output())
            self._functions[paths] = torch._C._create_function_from_graph(
                "tapped_forward", graph
            )
        return self._functions[paths]

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
        for path in key:
            self.site(path)
        result = self._function(key)(self.module._c, inputs)
        output, *taps = result
        return output, taps
