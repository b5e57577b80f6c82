"""Reach inside a ``torch.export`` program: module outputs and their gradients, without hooks.

The twin of :class:`auditor.taps.TappedModel` for ``.pt2`` files, with the same public
interface, so that the stages do not care which format the model came in. A program's
``module()`` is a flat :class:`torch.fx.GraphModule`: its submodules are never called, so
forward hooks (Captum's layer methods, pytorch-grad-cam, FlopCounterMode's module
attribution) see nothing, as on TorchScript.

How it works:

1. The program is made functional first (``run_decompositions({})`` in
   :func:`auditor.pt2.load_program`): the export graph keeps in-place ops (``relu_``,
   ``add_`` for ``out += identity``), which would overwrite a tapped value.
2. Every node carries ``meta["nn_module_stack"]``; a module's output is the last tensor
   produced inside its dotted path that is used outside it, named after the outermost
   module when several nested modules share it, as for TorchScript.
3. To tap values, the graph is copied, its output replaced by ``(leaves, tapped)`` with
   the plain code generator (no pytree flattening), and compiled into a
   :class:`~torch.fx.GraphModule` that shares the module's parameters. The program's
   guard check (``_guards_fn``, input shapes) stays in the copy.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch.fx import GraphModule, Interpreter, Node
from torch.utils.flop_counter import FlopCounterMode

from auditor.taps.fx_graph import (
    CONVOLUTIONS,
    RELUS,
    attribute_tensor,
    find_head_input,
    find_linear_head,
    is_tensor,
    is_transposed,
    module_frames,
    op_name,
)
from auditor.taps.model import ModuleEntry, ModuleSite, SharedTaps

__all__ = ["TappedExport"]


class TappedExport(SharedTaps):
    """A ``torch.export`` program whose submodule outputs can be returned next to its output.

    Args:
        module: ``ExportedProgram.module()`` of a functional program (no in-place ops),
            on any device.

    Example:
        >>> program = torch.export.load("model.pt2").run_decompositions({})
        >>> tapped = TappedExport(program.module())
        >>> logits, (features,) = tapped(images, ["layer4"])
    """

    def __init__(self, module: GraphModule) -> None:
        self.module = module
        self._nodes = list(module.graph.nodes)
        self._address = {node: i for i, node in enumerate(self._nodes)}
        self._out_spec = getattr(module, "_out_spec", None)
        self._sites: dict[str, tuple[ModuleSite, int]] = {}
        self._functions: dict[tuple[int, ...], GraphModule] = {}
        self._find_sites()
        self._head = find_linear_head(module, self._address)
        self._head_input = find_head_input(module, self._address)

    def relu_addresses(self) -> tuple[int, ...]:
        """Addresses of every ReLU's output (``aten.relu``), module or functional."""
        return tuple(self._address[n] for n in self._nodes if op_name(n) in RELUS)

    def _find_sites(self) -> None:
        order = 0
        for node in self._nodes:
            frames = module_frames(node)
            if not frames or not is_tensor(node):
                continue
            order += 1
            user_paths = [tuple(p for p, _ in module_frames(user)) for user in node.users]
            # As for TorchScript: one value can be the output of several nested modules,
            # and a module called more than once keeps its last call.
            for depth in range(1, len(frames) + 1):
                prefix = tuple(path for path, _ in frames[:depth])
                if all(user[:depth] == prefix for user in user_paths):
                    continue
                path, type_name = frames[depth - 1]
                site = ModuleSite(path=path, type_name=type_name, order=order)
                self._sites[path] = (site, self._address[node])

    def modules(self) -> list[ModuleEntry]:
        """Every submodule that runs an operation, parents first, in order of first use.

        The program keeps no module objects (``named_modules()`` lists only the owners
        of parameters, as plain ``Module``), so paths and class names come from the
        nodes' module stacks, and parameter counts from the parameter names.
        """
        types: dict[str, str] = {}
        for node in self._nodes:
            for path, type_name in module_frames(node):
                types.setdefault(path, type_name)
        parameters = [(n, p.numel()) for n, p in self.module.named_parameters()]
        return [
            ModuleEntry(path, name, sum(k for n, k in parameters if n.startswith(path + ".")))
            for path, name in types.items()
        ]

    def _function(self, addresses: tuple[int, ...]) -> GraphModule:
        """A forward that returns ``(output leaves, values)`` for the values at ``addresses``."""
        if addresses not in self._functions:
            graph = copy.deepcopy(self.module.graph)
            nodes = list(graph.nodes)
            output = graph.output_node()
            leaves = output.args[0]
            graph.erase_node(output)
            graph.output((leaves, tuple(nodes[a] for a in addresses)))
            graph.set_codegen(torch.fx.graph.CodeGen())
            self._functions[addresses] = GraphModule(self.module, graph, "TappedForward")
        return self._functions[addresses]

    def _run(
        self, inputs: torch.Tensor, addresses: tuple[int, ...]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves, taps = self._function(addresses)(inputs)
        if self._out_spec is not None:
            output = pytree.tree_unflatten(list(leaves), self._out_spec)
        else:
            output = leaves[0] if len(leaves) == 1 else tuple(leaves)
        return output, list(taps)

    def first_convolution(self) -> tuple[torch.Tensor, bool] | None:
        """The first convolution's weight and whether it is transposed, or ``None``."""
        for node in self._nodes:
            if op_name(node) in CONVOLUTIONS:
                weight = attribute_tensor(node.args[1], self.module)
                if weight is not None and weight.dim() >= 3:
                    return weight.detach(), is_transposed(node)
                return None
        return None

    def flops_by_module(self, inputs: torch.Tensor) -> tuple[int, dict[str, int]]:
        """FLOPs as :class:`~torch.utils.flop_counter.FlopCounterMode` counts them, by module.

        The graph runs node by node (:class:`torch.fx.Interpreter`) under one
        FlopCounterMode; each node's share is the growth of its total, attributed to the
        node's module and every ancestor. The total is FlopCounterMode's own.

        Args:
            inputs: ``(B, C, H, W)`` example input; FLOPs are for the whole batch.
        """
        per_module: dict[str, int] = {}
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            _NodeFlops(self.module, counter, per_module).run(inputs)
        return int(counter.get_total_flops()), per_module

    def __call__(
        self, inputs: torch.Tensor, paths: Sequence[str] = (), addresses: Sequence[int] = ()
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Run the model and return its output and the outputs of ``paths`` (see
        :meth:`auditor.taps.TappedModel.__call__`).

        Raises:
            KeyError: A path names no tappable module.
        """
        wanted = tuple(self._sites[self.site(path).path][1] for path in paths)
        return self._run(inputs, wanted + tuple(addresses))


class _NodeFlops(Interpreter):
    """Runs a graph node by node and adds each node's FLOPs to its modules' counts."""

    def __init__(
        self, module: GraphModule, counter: FlopCounterMode, per_module: dict[str, int]
    ) -> None:
        super().__init__(module)
        self.counter = counter
        self.per_module = per_module

    def run_node(self, n: Node) -> Any:
        before = self.counter.get_total_flops()
        result = super().run_node(n)
        flops = int(self.counter.get_total_flops() - before)
        if flops:
            for path, _ in module_frames(n):
                self.per_module[path] = self.per_module.get(path, 0) + flops
        return result
