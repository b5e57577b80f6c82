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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from auditor.taps.graph import (
    CONVOLUTIONS,
    PRODUCTS,
    addressable,
    attribute_tensor,
    fold_scalar_attributes,
    functionalize_fresh_inplace,
    is_tensor,
    is_transposed,
    module_frames,
)
from auditor.taps.head import HeadInput, LinearHead, find_head_input, find_linear_head

__all__ = ["ModuleEntry", "ModuleSite", "SharedTaps", "TappedModel"]


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


@dataclass(frozen=True)
class ModuleEntry:
    """A submodule, tapped or not, for the architecture table.

    Attributes:
        path: Dotted module path, e.g. ``"layer4.1.conv2"``.
        type_name: The module's class name, e.g. ``"Conv2d"``.
        parameters: Parameters of the module and its children.
    """

    path: str
    type_name: str
    parameters: int


class SharedTaps:
    """What both formats' taps do alike: the tappable submodules by dotted path, and the
    input channels read off the first convolution."""

    _sites: dict[str, tuple[ModuleSite, int]]
    """Path → its site and the address of its output value."""
    _head: tuple[LinearHead | None, str]
    _head_input: tuple[HeadInput | None, str]

    @property
    def linear_head(self) -> tuple[LinearHead | None, str]:
        """The global-average-pooling + linear head, or ``None`` and why there is none."""
        return self._head

    @property
    def head_input(self) -> tuple[HeadInput | None, str]:
        """The last linear layer's input (the embedding), or ``None`` and why there is none."""
        return self._head_input

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

    def first_convolution(self) -> tuple[torch.Tensor, bool] | None:
        """The first convolution's weight and whether it is transposed (each format's own)."""
        raise NotImplementedError

    def input_channels(self) -> int | None:
        """The number of input channels of the first convolution, or ``None`` if there is none."""
        first = self.first_convolution()
        if first is None:
            return None
        weight, transposed = first
        return int(weight.shape[0] if transposed else weight.shape[1])


class TappedModel(SharedTaps):
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
        fold_scalar_attributes(self._graph, module)
        torch._C._jit_pass_remove_mutation(self._graph)
        functionalize_fresh_inplace(self._graph)
        self._sites: dict[str, tuple[ModuleSite, int]] = {}
        self._functions: dict[tuple[int, ...], Any] = {}
        self._address = {v.unique(): i for i, v in enumerate(addressable(self._graph))}
        self._find_sites()
        self._head = find_linear_head(self._graph, module, self._address)
        self._head_input = find_head_input(self._graph, self._address)

    def relu_addresses(self) -> tuple[int, ...]:
        """Addresses of every ReLU's output (``aten::relu``/``relu_``), module or functional.

        Guided backpropagation rewrites the gradient at exactly these values.
        """
        return tuple(
            self._address[node.output().unique()]
            for node in self._graph.nodes()
            if node.kind() in ("aten::relu", "aten::relu_")
        )

    def _find_sites(self) -> None:
        nodes = list(self._graph.nodes())
        frames_of = {node: module_frames(node) for node in nodes}
        paths = {node: tuple(name for name, _ in frames) for node, frames in frames_of.items()}
        order = 0
        for node, frames in frames_of.items():
            if not frames:
                continue
            for value in node.outputs():
                if not is_tensor(value):
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
        return tuple(name for name, _ in module_frames(node))

    def modules(self) -> list[ModuleEntry]:
        """Every submodule, in definition order (a parent before its children)."""
        return [
            ModuleEntry(
                path=path,
                type_name=str(getattr(submodule, "original_name", type(submodule).__name__)),
                parameters=sum(p.numel() for p in submodule.parameters()),
            )
            for path, submodule in self.module.named_modules()
            if path
        ]

    def _function(self, addresses: tuple[int, ...]) -> Any:
        """A compiled forward that returns ``(output, *values)`` for the values at ``addresses``."""
        if addresses not in self._functions:
            graph = self._graph.copy()
            values_here = addressable(graph)
            original = next(graph.outputs())
            graph.eraseOutput(0)
            values = [original, *(values_here[a] for a in addresses)]
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

    def first_convolution(self) -> tuple[torch.Tensor, bool] | None:
        """The first convolution's weight and whether it is transposed, or ``None``."""
        for node in self._graph.nodes():
            if node.kind() in CONVOLUTIONS:
                weight = attribute_tensor(node.inputsAt(1), self.module)
                if weight is not None and weight.dim() >= 3:
                    return weight.detach(), is_transposed(node)
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
        counted = [n for n in self._graph.nodes() if n.kind() in CONVOLUTIONS | PRODUCTS]
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
            if node.kind() in CONVOLUTIONS:
                spatial = first.shape[2:] if is_transposed(node) else out.shape[2:]
                flops = 2 * out.shape[0] * second.numel() * int(torch.Size(spatial).numel())
            elif node.kind() in ("aten::linear", "aten::addmm"):
                flops = 2 * out.numel() * second.shape[-1]
            else:
                flops = 2 * out.numel() * first.shape[-1]
            total += flops
            frames = [name for name, _ in module_frames(node)]
            for depth in range(1, len(frames) + 1):
                path = ".".join(frames[:depth])
                per_module[path] = per_module.get(path, 0) + flops
        return total, per_module

    def __call__(
        self, inputs: torch.Tensor, paths: Sequence[str] = (), addresses: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model and return its output and the outputs of ``paths``.

        Args:
            inputs: ``(B, C, H, W)`` float tensor on the module's device.
            paths: Dotted module paths to tap, as listed by :attr:`sites`.
            addresses: Further values to tap, by address (from :attr:`linear_head` or
                :meth:`relu_addresses`).

        Returns:
            The model's output and one tensor per path, then one per address, in the
            order asked. The tapped tensors are part of the autograd graph:
            ``torch.autograd.grad(score, taps)`` gives gradients with respect to them.

        Raises:
            KeyError: A path names no tappable module.
        """
        wanted = tuple(self._sites[self.site(path).path][1] for path in paths)
        return self._run(inputs, wanted + tuple(addresses))
