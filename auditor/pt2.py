"""Load stage, ``torch.export`` side: open a ``.pt2`` program safely and make it auditable.

A pt2 archive (``torch.export.save``) is a zip of JSON (the graph, the payload configs)
and raw tensor bytes; but :func:`torch.export.load` unpickles some payloads without
torch's weights-only restriction (weights or constants marked ``use_pickle``, and, as a
fallback, a sample-inputs file that the restricted loader refuses) and opaque Python
objects with plain pickle. So the archive's configs are read first and such payloads
refused, and the load runs with ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` set, so that no
fallback can run code from the file.

The audit calls the program on batches of any size from 1 up, so its batch dimension must
be dynamic; and it must be in eval mode (no batch-norm statistics updated by a call).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from torch.export.passes import move_to_device_pass
from torch.fx import GraphModule

from auditor.errors import ModelError

__all__ = ["EXPORT_HINT", "check_pt2_archive", "is_pt2_archive", "load_program"]

EXPORT_HINT = (
    "save the model with `torch.export.save(torch.export.export(model.eval(), (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), path)`, where x is a batch of 2 or "
    "more example images"
)
_AOTI = "data/aotinductor/"
_UNSAFE_CONSTANTS = ("opaque_obj_", "custom_obj_")


def is_pt2_archive(names: list[str]) -> bool:
    """Whether the zip's member names are those of a pt2 archive (or of an older export).

    Only top-level entries of the archive's root folder count: a TorchScript archive of a
    torchvision model holds ``code/__torch__/torchvision/models/...``.
    """
    inner = [_inner(n) for n in names]
    return (
        "archive_format" in inner
        or any(n.startswith("models/") and n.endswith(".json") for n in inner)
        or "serialized_exported_program.json" in names
    )


def _inner(name: str) -> str:
    """``data/weights/x`` for ``<archive root>/data/weights/x``."""
    return name.split("/", 1)[1] if "/" in name else name


def check_pt2_archive(path: Path) -> None:
    """Refuse a pt2 archive that holds no readable program or payloads that would be unpickled.

    Raises:
        ModelError: An older export format, an AOTInductor package (compiled code), no
            program named ``model``, or pickled weights, constants or Python objects.
    """
    with zipfile.ZipFile(path) as archive:
        inner = {_inner(n): n for n in archive.namelist()}
        if "serialized_exported_program.json" in archive.namelist():
            raise ModelError(
                f"{path.name!r} was saved by torch.export of PyTorch 2.7 or older, a format "
                f"Auditor does not read; load it there and save it again with this version"
            )
        if "models/model.json" not in inner:
            what = "an AOTInductor package (compiled code, no graph)" if any(
                n.startswith(_AOTI) for n in inner
            ) else "a pt2 archive without a program named 'model'"  # fmt: skip
            raise ModelError(
                f"{path.name!r} is {what}, not a torch.export program Auditor can read; "
                f"{EXPORT_HINT}"
            )
        pickled = [n for n in ("data/weights/model.pt", "data/constants/model.pt") if n in inner]
        for config in ("data/weights/model_weights_config.json",
                       "data/constants/model_constants_config.json"):  # fmt: skip
            if config in inner:
                entries = json.loads(archive.read(inner[config]))["config"]
                pickled += [
                    name
                    for name, entry in entries.items()
                    if entry.get("use_pickle") or entry["path_name"].startswith(_UNSAFE_CONSTANTS)
                ]
    if pickled:
        raise ModelError(
            f"{path.name!r} holds pickled payloads ({', '.join(pickled[:3])}), which Auditor "
            f"does not unpickle; export a model whose weights are plain tensors"
        )


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """Every :func:`torch.load` inside runs weights-only, even where the caller asks otherwise."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD",)}
    saved["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_inputs(program: ExportedProgram, name: str) -> None:
    """Refuse a program that does not take one ``(B, C, H, W)`` batch of any size.

    Raises:
        ModelError: Saying what to change in the export call.
    """
    inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(inputs) != 1:
        raise ModelError(
            f"{name!r} takes {len(inputs)} inputs; Auditor calls the model with one batch of "
            f"images: export a model whose forward takes one (B, C, H, W) tensor"
        )
    (placeholder,) = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0].arg.name
    ]
    example = placeholder.meta.get("val")
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        raise ModelError(
            f"{name!r} takes {getattr(example, 'shape', type(example).__name__)}; Auditor calls "
            f"the model with one (B, C, H, W) batch of images"
        )
    batch = example.shape[0]
    if not isinstance(batch, torch.SymInt):
        raise ModelError(
            f"{name!r} was exported for batches of exactly {batch} image(s); Auditor runs "
            f"batches of any size, so mark the batch dimension dynamic: {EXPORT_HINT}"
        )


def _check_eval_mode(program: ExportedProgram, name: str) -> None:
    """Refuse a functional program exported in training mode: its calls update batch-norm
    statistics (they show as buffers to mutate) or drop units at random.

    Raises:
        ModelError: Saying to export ``model.eval()``.
    """
    mutated = list(program.graph_signature.buffers_to_mutate.values())
    dropouts = [
        n.name
        for n in program.graph.nodes
        if n.op == "call_function"
        and str(n.target).startswith(("aten.native_dropout", "aten.dropout", "aten.bernoulli"))
        and (len(n.args) < 3 or n.args[2] is not False)
    ]
    if mutated or dropouts:
        what = f"each call updates {mutated[0]}" if mutated else "its dropout is active"
        raise ModelError(f"{name!r} was exported in training mode ({what}); export `model.eval()`")


def load_program(path: Path, device: torch.device) -> GraphModule:
    """Load a checked pt2 archive (:func:`check_pt2_archive`) as a functional module on ``device``.

    The program is functionalised (``run_decompositions({})``: in-place ops such as
    ``relu_`` or ``out += identity`` become out-of-place, so tapped values are never
    overwritten; no operator is decomposed) and moved with its constants to ``device``.

    Raises:
        ModelError: It fails to load, or cannot be audited (:func:`_check_inputs`,
            :func:`_check_eval_mode`).
    """
    try:
        with _weights_only():
            program = torch.export.load(str(path))
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path.name!r} holds a pickled Python object that is not plain tensors, which "
            f"Auditor does not unpickle; {EXPORT_HINT}"
        ) from None
    except (RuntimeError, ValueError, KeyError, AssertionError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(
            f"{path.name!r} could not be loaded as a torch.export program ({message}); "
            f"{EXPORT_HINT}"
        ) from None
    if not isinstance(program, ExportedProgram):
        raise ModelError(
            f"{path.name!r} holds a {type(program).__name__}, not an ExportedProgram; {EXPORT_HINT}"
        )
    _check_inputs(program, path.name)
    program = program.run_decompositions({})
    _check_eval_mode(program, path.name)
    return move_to_device_pass(program, device).module()
