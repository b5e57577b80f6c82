"""Load stage, model side: open a model file safely and learn how to read its output.

Two formats: TorchScript (``torch.jit.save``) and ``torch.export`` programs
(``torch.export.save``, ``.pt2``), told apart by the archive's contents, not its name.
Nothing here unpickles arbitrary Python objects: a file is checked to be a TorchScript
or pt2 zip archive before PyTorch's loader sees it, pickles are refused by their first
bytes, and a pt2 archive whose payloads ``torch.export.load`` would unpickle is refused
(:mod:`auditor.pt2`).
"""

from __future__ import annotations

import hashlib
import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from auditor.errors import ConfigError, ModelError
from auditor.output_kind import OutputKind
from auditor.pt2 import EXPORT_HINT, check_pt2_archive, is_pt2_archive, load_program
from auditor.taps import Model, Taps, tap_model

__all__ = [
    "LoadedModel",
    "OutputKind",
    "check_output",
    "class_scores",
    "detect_output_kind",
    "file_sha256",
    "first_line",
    "forward_failed",
    "load_model",
    "resolve_device",
    "target_scores",
    "to_probabilities",
]

log = logging.getLogger(__name__)

_TORCHSCRIPT_HINT = (
    "export the model with `torch.jit.script(model).save(path)` "
    "(or `torch.jit.trace(model, example).save(path)`)"
)


@dataclass(frozen=True)
class LoadedModel:
    """A TorchScript model or ``torch.export`` program ready to run.

    Attributes:
        module: The loaded module, in eval mode, on ``device``: a TorchScript module, or
            the ``module()`` of the functional program (see :mod:`auditor.pt2`).
        tapped: Access to its submodule outputs (see :mod:`auditor.taps`).
        path: The file it came from.
        sha256: SHA-256 of the file, hex.
        file_size: Size of the file in bytes.
        device: Where it runs.
        in_channels: Input channels of its first convolution (3 for RGB, 1 for grayscale).
    """

    module: Model
    tapped: Taps
    path: Path
    sha256: str
    file_size: int
    device: torch.device
    in_channels: int

    @property
    def format(self) -> str:
        """``"TorchScript"`` or ``"torch.export"``, for the report."""
        return "TorchScript" if isinstance(self.module, torch.jit.ScriptModule) else "torch.export"


MODEL_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, AssertionError, torch.jit.Error)
"""What a model's forward pass raises when it fails: PyTorch's errors, the
``torch.jit.Error`` of an exception raised inside TorchScript code (not a RuntimeError),
and the ``AssertionError`` of an exported program's guard (``Guard failed:
x.size()[2] == 64`` for an input of another size)."""


def first_line(error: BaseException) -> str:
    """The line of an exception's message that says what went wrong (PyTorch's run to dozens
    of lines): the first, or for an exception raised inside TorchScript code, the last (its
    own message, after the TorchScript traceback)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[-1] if "Traceback of TorchScript" in str(error) else lines[0]


def forward_failed(
    model_name: str, shape: tuple[int, ...], error: BaseException, hint: str
) -> ModelError:
    """The one-line error for a forward pass the model raised on."""
    size = "x".join(map(str, shape))
    return ModelError(f"{model_name!r} failed on a {size} input ({first_line(error)}); {hint}")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_device(name: str) -> torch.device:
    """Turn ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` into a usable device.

    Raises:
        ConfigError: CUDA was asked for and is not available, or N is out of range.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {name}: CUDA is not available on this machine; use --device cpu or auto"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"--device {name}: this machine has {count} CUDA device(s), "
                f"numbered 0 to {count - 1}"
            )
    return device


def pin_float32(device: torch.device) -> None:
    """On CUDA, run float32 convolutions and matrix products in IEEE float32. cuDNN's
    default lets Ampere and later GPUs compute float32 convolutions in TF32 (a 10-bit
    mantissa), which moves maps and probabilities by about 1e-3 of their size; an audit
    that says float32 computes float32, and reduced precision is asked for with the
    ``precision`` setting, which the report states. Process-wide, as PyTorch's flags are;
    with PyTorch's per-backend API set, code in the same process that then reads the
    legacy ``torch.backends.cudnn.allow_tf32`` gets an error from PyTorch."""
    if device.type != "cuda":
        return
    if hasattr(torch.backends.cudnn, "conv"):  # torch >= 2.9: the per-backend API
        torch.backends.cudnn.conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
    else:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False


def _check_archive(path: Path) -> bool:
    """Refuse anything that is not a TorchScript or pt2 zip archive, saying what it looks like.

    Returns:
        Whether it is a pt2 archive (else TorchScript).
    """
    pt2 = path.suffix == ".pt2"
    hint = EXPORT_HINT if pt2 else _TORCHSCRIPT_HINT
    kind, archive_kind = (
        ("a torch.export program", "a pt2") if pt2 else ("TorchScript", "a TorchScript")
    )
    if not path.exists():
        raise ModelError(
            f"model file {str(path)!r} does not exist; pass the path of a TorchScript or .pt2 file"
        )
    if path.is_dir():
        raise ModelError(f"model path {str(path)!r} is a folder; pass a TorchScript or .pt2 file")
    if not path.is_file():  # a device, FIFO or socket: reading it may never end
        raise ModelError(
            f"model path {str(path)!r} is not a regular file (a device, FIFO or socket); "
            f"pass a TorchScript or .pt2 file"
        )
    with path.open("rb") as handle:
        head = handle.read(4)
    if head[:1] == b"\x80":
        raise ModelError(
            f"{path.name!r} is not {archive_kind} archive (it looks like a pickled object such as "
            f"a state_dict, saved with torch.save); {hint}"
        )
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path.name!r} is not {archive_kind} archive (not a zip file); {hint}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if is_pt2_archive(names):
        check_pt2_archive(path)
        return True
    if not any("/code/" in n for n in names) or not any(n.endswith("constants.pkl") for n in names):
        raise ModelError(
            f"{path.name!r} is a zip archive but not {kind} (it looks like a state_dict or "
            f"module saved with torch.save); {hint}"
        )
    return False


def _jit_load(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    """``torch.jit.load``, retried once with torchvision's operators registered if it needs them."""
    try:
        return torch.jit.load(str(path), map_location=device)
    except RuntimeError as error:
        if "torchvision::" not in str(error):
            raise
        import torchvision  # noqa: F401  (registers torchvision::nms and friends)

        return torch.jit.load(str(path), map_location=device)


def _load_torchscript(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # torch 2.9+ marks TorchScript deprecated; reading it is this tool's purpose.
            warnings.simplefilter("ignore", FutureWarning)
            module = _jit_load(path, device)
    except (RuntimeError, ValueError) as error:
        raise ModelError(
            f"{path.name!r} could not be loaded as TorchScript ({first_line(error)}); "
            f"{_TORCHSCRIPT_HINT}"
        ) from None
    return module.eval()


def load_model(path: Path, device: torch.device) -> LoadedModel:
    """Load a TorchScript classifier or ``torch.export`` program onto ``device`` in eval mode.

    Raises:
        ModelError: The file is missing, neither format, or fails to load; or an exported
            program cannot be audited (see :func:`auditor.pt2.load_program`).
    """
    exported = _check_archive(path)
    module = load_program(path, device) if exported else _load_torchscript(path, device)
    pin_float32(device)
    tapped = tap_model(module)
    channels = tapped.input_channels()
    if channels is None:
        log.warning("no convolution found in %s; assuming RGB input", path.name)
        channels = 3
    if channels not in (1, 3):
        raise ModelError(
            f"{path.name!r} expects {channels}-channel input; "
            "Auditor reads RGB (3) or grayscale (1) images"
        )
    return LoadedModel(
        module=module,
        tapped=tapped,
        path=path,
        sha256=file_sha256(path),
        file_size=path.stat().st_size,
        device=device,
        in_channels=channels,
    )


def _as_matrix(output: torch.Tensor) -> torch.Tensor:
    return output.unsqueeze(1) if output.dim() == 1 else output


def _shape_text(output: object) -> str:
    return str(tuple(output.shape)) if isinstance(output, torch.Tensor) else type(output).__name__


def detect_output_kind(
    output: object, classes: tuple[str, ...], model_name: str, multi_label: bool = False
) -> OutputKind:
    """Decide how to read the model's output from one batch of it (two images or more).

    A single output per image is a binary logit, unless every value of the batch lies
    in [0, 1] (a sigmoid head): then it is the probability of the second class. A
    multi-label model's outputs are likewise one logit per label, or one probability
    per label when every value lies in [0, 1].
    :func:`check_output` verifies every later batch against that reading.

    Args:
        output: What the model returned for a batch.
        classes: The data set's class names, in the model's output order.
        model_name: For messages.
        multi_label: Whether the data set gives each image a set of labels.

    Raises:
        ModelError: The output is not a ``(B, K)`` tensor, or K does not fit the classes.
    """
    if not isinstance(output, torch.Tensor) or output.dim() not in (1, 2):
        raise ModelError(
            f"{model_name!r} returns {_shape_text(output)}; "
            f"Auditor needs a (batch, classes) tensor of scores"
        )
    scores = _as_matrix(output.detach()).float()
    finite = scores[torch.isfinite(scores).all(dim=1)]
    n_outputs = scores.shape[1]
    if n_outputs == 1 and not multi_label:
        if len(classes) != 2:
            raise ModelError(
                f"{model_name!r} outputs a single score per image (a binary classifier) but the "
                f"data has {len(classes)} classes; audit it on two-class data"
            )
        if finite.numel() and bool(((finite >= 0) & (finite <= 1)).all()):
            return OutputKind.BINARY_PROBABILITY
        return OutputKind.BINARY_LOGIT
    if n_outputs != len(classes):
        listed = ", ".join(classes[:6]) + (", ..." if len(classes) > 6 else "")
        what = "labels" if multi_label else "classes"
        raise ModelError(
            f"{model_name!r} outputs {n_outputs} scores per image but the data has "
            f"{len(classes)} {what} ({listed}); pass --classes with the model's "
            f"{n_outputs} {what} in output order, or check that this is the right model"
        )
    if multi_label:
        in_unit = finite.numel() and bool(((finite >= 0) & (finite <= 1)).all())
        return OutputKind.LABEL_PROBABILITIES if in_unit else OutputKind.LABEL_LOGITS
    sums = finite.sum(dim=1)
    if (
        finite.numel()
        and bool((finite >= 0).all())
        and torch.allclose(sums, torch.ones_like(sums), atol=1e-3)
    ):
        return OutputKind.PROBABILITIES
    return OutputKind.LOGITS


def check_output(
    output: object, kind: OutputKind, n_classes: int, batch: int, model_name: str
) -> torch.Tensor:
    """Check one batch's output against the reading chosen at the start.

    Returns:
        ``(B,)`` bool: which images have finite scores (the others are excluded).

    Raises:
        ModelError: The shape changed (e.g. a ``squeeze()`` on a batch of one), or values
            contradict the reading (a probability outside [0, 1]).
    """
    outputs = 1 if kind in (OutputKind.BINARY_LOGIT, OutputKind.BINARY_PROBABILITY) else n_classes
    if (
        not isinstance(output, torch.Tensor)
        or output.dim() not in (1, 2)
        or output.shape[0] != batch
        or _as_matrix(output).shape[1] != outputs
    ):
        raise ModelError(
            f"{model_name!r} returned {_shape_text(output)} for a batch of {batch} images; "
            f"expected ({batch}, {outputs}) as for the first batch (a squeeze() in the model?); "
            f"fix the model's output shape"
        )
    scores = _as_matrix(output.detach()).float()
    finite = torch.isfinite(scores).all(dim=1)
    if kind.probabilities:
        valid = scores[finite]
        if valid.numel() and bool(((valid < 0) | (valid > 1 + 1e-3)).any()):
            raise ModelError(
                f"{model_name!r}'s output looked like probabilities in the first batch but has "
                f"values outside [0, 1] later; Auditor cannot tell how to read it, so return "
                f"logits (no softmax or sigmoid) from the model"
            )
    return finite


def to_probabilities(output: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """``(B, K)`` class probabilities from the model's raw output (a multi-label model's:
    each label's probability)."""
    scores = _as_matrix(output).float()
    if kind is OutputKind.LOGITS:
        return torch.softmax(scores, dim=1)
    if kind is OutputKind.BINARY_LOGIT:
        positive = torch.sigmoid(scores[:, 0])
        return torch.stack([1 - positive, positive], dim=1)
    if kind is OutputKind.BINARY_PROBABILITY:
        positive = scores[:, 0].clamp(0, 1)
        return torch.stack([1 - positive, positive], dim=1)
    if kind is OutputKind.LABEL_LOGITS:
        return torch.sigmoid(scores)
    return scores


def class_scores(output: torch.Tensor, kind: OutputKind) -> torch.Tensor:
    """Every class's score to explain: ``(B, K)``, differentiable.

    Logits are explained before the softmax (as Grad-CAM prescribes); a single binary
    logit ``z`` gives ``(-z, z)``; a single probability ``p`` gives ``(1 - p, p)``;
    probabilities are explained as they are; a multi-label model's logits (or
    probabilities) are each label's score. Perturbation methods (Captum's) index it
    with their ``target`` argument.
    """
    scores = _as_matrix(output)
    if kind is OutputKind.BINARY_LOGIT:
        return torch.cat([-scores[:, :1], scores[:, :1]], dim=1)
    if kind is OutputKind.BINARY_PROBABILITY:
        return torch.cat([1 - scores[:, :1], scores[:, :1]], dim=1)
    return scores


def target_scores(output: torch.Tensor, kind: OutputKind, targets: torch.Tensor) -> torch.Tensor:
    """The score to explain for each image: ``(B,)``, differentiable (see :func:`class_scores`)."""
    return class_scores(output, kind).gather(1, targets.view(-1, 1)).squeeze(1)
