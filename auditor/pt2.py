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
import logging
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import sympy
import torch
import torch.utils._pytree as pytree
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
_FORCE, _NO_FORCE = "TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
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
    """Refuse a pt2 archive that holds no readable program, or anything that
    :func:`torch.export.load` would unpickle, before PyTorch reads it.

    ``torch.export.load`` loads every program listed under ``models/`` (not only
    ``model``), reads opaque constants with plain pickle whatever ``torch.load`` is told,
    and unpickles weights and constants marked ``use_pickle``: so the archive must hold
    exactly one program, ``model``, and no payload of those kinds under any name.

    Raises:
        ModelError: An older export format, an AOTInductor package (compiled code), a
            program not named ``model`` or more than one, pickled or opaque payloads, or
            configs that are not the JSON PyTorch writes.
    """
    with zipfile.ZipFile(path) as archive:
        inner = {_inner(n): n for n in archive.namelist()}
        if "serialized_exported_program.json" in archive.namelist():
            raise ModelError(
                f"{path.name!r} was saved by torch.export of PyTorch 2.7 or older, a format "
                f"Auditor does not read; load it there and save it again with this version"
            )
        programs = sorted(n for n in inner if n.startswith("models/") and n.endswith(".json"))
        if programs != ["models/model.json"]:
            aoti = any(n.startswith(_AOTI) for n in inner)
            what = (
                "an AOTInductor package (compiled code, no graph)" if aoti and not programs
                else f"a pt2 archive with the programs {programs or 'none'}, not one named "
                "'model'"
            )  # fmt: skip
            raise ModelError(f"{path.name!r} is {what}, which Auditor does not read; {EXPORT_HINT}")
        pickled = _pickled_payloads(archive, inner, path.name)
    if pickled:
        raise ModelError(
            f"{path.name!r} holds pickled payloads ({', '.join(pickled[:3])}), which Auditor "
            f"does not unpickle; export a model whose weights are plain tensors"
        )


def _pickled_payloads(archive: zipfile.ZipFile, inner: dict[str, str], name: str) -> list[str]:
    """The archive's members and config entries that ``torch.export.load`` would unpickle.

    Raises:
        ModelError: A weights or constants config is not the JSON PyTorch writes.
    """
    found = [
        n for n in inner
        if n.startswith(("data/weights/", "data/constants/")) and (
            n.endswith(".pt") or n.rsplit("/", 1)[-1].startswith(_UNSAFE_CONSTANTS)
        )
    ]  # fmt: skip
    for config in (
        n for n in inner if n.endswith(("_weights_config.json", "_constants_config.json"))
    ):
        try:
            entries = json.loads(archive.read(inner[config]))["config"]
            found += [
                key
                for key, entry in entries.items()
                if entry.get("use_pickle") or str(entry["path_name"]).startswith(_UNSAFE_CONSTANTS)
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ModelError(
                f"{name!r} has a damaged {config.rsplit('/', 1)[-1]} (not the JSON "
                f"torch.export.save writes); save the program again"
            ) from None
    return found


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """Every :func:`torch.load` inside runs weights-only, even where the caller asks otherwise
    (process-wide, as environment variables are)."""
    forced, refused = (os.environ.get(k) for k in (_FORCE, _NO_FORCE))
    os.environ.pop(_NO_FORCE, None)
    os.environ[_FORCE] = "1"
    try:
        yield
    finally:
        for key, value in ((_FORCE, forced), (_NO_FORCE, refused)):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class _Causes(logging.Handler):
    """The first line of each exception PyTorch's export code logs: ``torch.export.load``
    logs the cause of a failure with its traceback, then raises a generic error."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None:
            self.lines.append((str(error).strip().splitlines() or [type(error).__name__])[0])


@contextlib.contextmanager
def _causes_kept() -> Iterator[_Causes]:
    """Collect what ``torch.export`` logs, instead of letting it print a traceback."""
    loggers, causes = [logging.getLogger(n) for n in ("torch.export", "torch._export")], _Causes()
    saved = [(logger.handlers, logger.propagate) for logger in loggers]
    for logger in loggers:
        logger.handlers, logger.propagate = [causes], False
    try:
        yield causes
    finally:
        for logger, (handlers, propagate) in zip(loggers, saved, strict=True):
            logger.handlers, logger.propagate = handlers, propagate


def _loaded(path: Path) -> ExportedProgram:
    """``torch.export.load`` of a checked archive, weights-only, its failures one line.

    Raises:
        ModelError: It fails, with PyTorch's own cause (a schema version this PyTorch does
            not read, a device this machine lacks...).
    """
    try:
        with _weights_only(), _causes_kept() as causes:
            program = torch.export.load(str(path))
    except pickle.UnpicklingError:
        raise ModelError(
            f"{path.name!r} holds a pickled Python object that is not plain tensors, which "
            f"Auditor does not unpickle; {EXPORT_HINT}"
        ) from None
    except Exception as error:  # PyTorch's loader raises many kinds on a damaged archive
        cause = causes.lines[-1] if causes.lines else str(error).strip() or type(error).__name__
        cause = cause.splitlines()[0]
        raise ModelError(
            f"{path.name!r} could not be loaded as a torch.export program "
            f"({cause if len(cause) <= 200 else cause[:199] + '…'}); save it again with "
            f"PyTorch {torch.__version__} (the one Auditor runs), on the CPU"
        ) from None
    if not isinstance(program, ExportedProgram):
        raise ModelError(
            f"{path.name!r} holds a {type(program).__name__}, not an ExportedProgram; {EXPORT_HINT}"
        )
    return program


def _check_inputs(program: ExportedProgram, name: str) -> None:
    """Refuse a program that does not take one ``(B, C, H, W)`` batch of any size, passed
    positionally.

    Raises:
        ModelError: Saying what to change in the export call.
    """
    inputs = [s for s in program.graph_signature.input_specs if s.kind == InputKind.USER_INPUT]
    if len(inputs) != 1 or program.call_spec.in_spec != pytree.tree_structure(((0,), {})):
        how = f"{len(inputs)} inputs" if len(inputs) != 1 else "its images by keyword or in a list"
        raise ModelError(
            f"{name!r} takes {how}; Auditor calls the model with one batch of images: export "
            f"a model whose forward takes one (B, C, H, W) tensor, passed positionally"
        )
    (placeholder,) = [
        n for n in program.graph.nodes if n.op == "placeholder" and n.name == inputs[0].arg.name
    ]
    example = placeholder.meta.get("val")
    if not isinstance(example, torch.Tensor) or example.dim() != 4:
        shape = getattr(example, "shape", None)
        text = (
            f"a ({', '.join(['batch', *(str(d) for d in shape[1:])])}) tensor"
            if shape is not None else type(example).__name__
        )  # fmt: skip
        raise ModelError(
            f"{name!r} takes {text}; Auditor calls the model with one (B, C, H, W) batch of "
            f"images: export a model whose forward takes one image tensor"
        )
    batch = example.shape[0]
    if not isinstance(batch, torch.SymInt):
        raise ModelError(
            f"{name!r} was exported for batches of exactly {batch} image(s); Auditor runs "
            f"batches of any size, so mark the batch dimension dynamic: {EXPORT_HINT}"
        )
    bound = program.range_constraints.get(batch.node.expr)
    if bound is not None and isinstance(bound.upper, sympy.Integer):
        raise ModelError(
            f"{name!r} was exported for batches of at most {int(bound.upper)} images; the "
            f"audit's batch sizes vary with its settings and the device, so export with an "
            f"unbounded batch dimension: {EXPORT_HINT}"
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
    program = _loaded(path)
    _check_inputs(program, path.name)
    try:
        program = program.run_decompositions({})
    except Exception as error:  # an operator this PyTorch cannot functionalise
        raise ModelError(
            f"{path.name!r} could not be made functional ({type(error).__name__}: "
            f"{(str(error).strip().splitlines() or [''])[0]}); {EXPORT_HINT}"
        ) from None
    _check_eval_mode(program, path.name)
    return move_to_device_pass(program, device).module()
