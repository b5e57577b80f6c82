"""A multi-label model with a known answer, and its data.

:class:`ChannelLabels` calls label ``k`` when channel ``k`` of the image is bright on
average: each label's logit is ``12 * mean(channel k) - 6`` (a convolution that copies
the channels, a ReLU, global average pooling and a linear head). The images of
:func:`make_label_dataset` carry a bright square in the channel of each of their labels,
so the model is right on every image but the few whose manifest labels were changed.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
from click.testing import Result
from PIL import Image
from torch import nn

from tests.helpers import invoke, save_torchscript, write_manifest

LABELS = ("effusion", "nodule", "pneumothorax")
WRONG_ROWS = {3: "nodule", 10: "-", 17: "effusion;pneumothorax"}
"""Rows whose manifest labels are not what the image shows (the model's known errors)."""

LABEL_FLAGS = (
    "--explain-samples", "3", "--batch-size", "4", "--seed", "1", "--device", "cpu",
    "--patient-column", "patient",
)  # fmt: skip
"""The flags of the multi-label audit shared by the tests (``label_audit`` in conftest.py);
another run of the same audit passes them too."""


class ChannelLabels(nn.Module):
    """One logit per label: ``12 * mean(channel k) - 6`` for label ``k``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(6, 3)
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].bias.zero_()
            for k in range(3):
                self.features[0].weight[k, k, 1, 1] = 1.0
                self.features[0].weight[k + 3, k] = 0.05  # spare channels, weakly tied
            self.classifier.weight.zero_()
            self.classifier.weight[:, :3] = 12 * torch.eye(3)
            self.classifier.bias.fill_(-6.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def shown(i: int) -> tuple[str, ...]:
    """The labels image ``i`` shows: every subset of the labels in turn."""
    subsets = [s for r in range(4) for s in itertools.combinations(LABELS, r)]
    return subsets[i % len(subsets)]


def square(i: int) -> np.ndarray:
    """``(32, 32)`` bool: where image ``i``'s square is (in the channels of its labels)."""
    top, left = np.random.default_rng([i, 1]).integers(0, 12, 2)
    inside = np.zeros((32, 32), dtype=bool)
    inside[top : top + 20, left : left + 20] = True
    return inside


SCANNER_MARK = 18
"""Side of the bright square a scanner ``X`` prints in the top-left corner of the first
label's channel (:func:`make_label_dataset` with ``scanner``): enough for the model to
call that label."""


def make_label_dataset(
    folder: Path, n: int = 24, scanner: bool = False, mark_masks: bool = False
) -> Path:
    """``n`` 32 x 32 images, a bright 20 x 20 square (:func:`square`) in the channel of
    each label shown, and their manifest (labels ``a;b``, ``-`` for none) with a ``site``
    and a ``patient`` column: :data:`WRONG_ROWS` changed; or with ``scanner``, no row
    changed and a ``scanner`` column (``X`` and ``Y`` in turns of eight images, so every
    set of labels at each), ``X`` printing its mark (:data:`SCANNER_MARK`) in the channel
    of ``LABELS[0]``; with ``mark_masks`` too, a ``mark_mask`` column: the mark's mask
    (empty where there is none), to declare as a concept (:data:`MARK_CONCEPT`)."""
    mark = np.zeros((32, 32), dtype=np.uint8)
    mark[:SCANNER_MARK, :SCANNER_MARK] = 255
    if mark_masks:
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mark).save(folder / "masks" / "mark.png")
    rows = []
    for i in range(n):
        pixels = np.full((32, 32, 3), 0.3) + np.random.default_rng(i).normal(0, 0.02, (32, 32, 3))
        for name in shown(i):
            pixels[square(i), LABELS.index(name)] = 1.0
        row = {"site": "AB"[i % 2], "patient": f"p{i // 2}"}
        if scanner:
            row["scanner"] = "XY"[(i // 8) % 2]
            if row["scanner"] == "X":
                pixels[:SCANNER_MARK, :SCANNER_MARK, 0] = 1.0
        path = folder / "images" / f"x{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((pixels.clip(0, 1) * 255).round().astype(np.uint8)).save(path)
        if mark_masks:
            row["mark_mask"] = "masks/mark.png" if row["scanner"] == "X" else ""
        label = (None if scanner else WRONG_ROWS.get(i)) or ";".join(shown(i)) or "-"
        rows.append({"path": f"images/{path.name}", "label": label, **row})
    return write_manifest(folder, rows)


MARK_CONCEPT = 'concepts = ["mark_mask"]\nartifact-concepts = ["mark_mask"]\n'
"""The config that declares the scanner's mark (``mark_mask``) an artefact concept."""


CALIBRATION_SCALES = (1.0, 3.0, 1 / 3)
"""How much :func:`scaled_labels` stretches each label's logit from the truth's of
:func:`make_calibration_dataset`: 1 calibrated, 3 over-confident (a recalibration finds
slope 1/3), 1/3 under-confident (slope 3)."""


def scaled_labels(scales: tuple[float, ...] = CALIBRATION_SCALES) -> ChannelLabels:
    """:class:`ChannelLabels` with label ``k``'s logit multiplied by ``scales[k]``."""
    model = ChannelLabels()
    with torch.no_grad():
        stretch = torch.tensor(scales, dtype=torch.float32)
        model.classifier.weight.mul_(stretch[:, None])
        model.classifier.bias.mul_(stretch)
    return model


def make_calibration_dataset(folder: Path, n: int = 240, seed: int = 0) -> Path:
    """``n`` flat 16 x 16 images, channel ``k`` at a level ``m`` drawn uniformly in
    [0.2, 0.8] (as the PNG stores it), and label ``k`` drawn with probability
    ``sigmoid(12 m - 6)``: :class:`ChannelLabels`' probability, so that model is
    calibrated on them. A ``site`` column alternates A and B."""
    rng = np.random.default_rng([seed, 5])
    rows = []
    for i in range(n):
        levels = np.round(rng.uniform(0.2, 0.8, 3) * 255) / 255
        has = rng.random(3) < 1 / (1 + np.exp(-(12 * levels - 6)))
        path = folder / "images" / f"c{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = np.broadcast_to(np.round(levels * 255).astype(np.uint8), (16, 16, 3))
        Image.fromarray(np.ascontiguousarray(pixels)).save(path)
        label = ";".join(name for name, on in zip(LABELS, has, strict=True) if on) or "-"
        rows.append({"path": f"images/{path.name}", "label": label, "site": "AB"[i % 2]})
    return write_manifest(folder, rows)


def run_label_audit(
    model: nn.Module, manifest: Path, folder: Path, config: str = "", flags: tuple[str, ...] = ()
) -> Result:
    """A quick multi-label audit of ``model`` on ``manifest``, into ``folder``: one
    sampled image, saliency only, HTML and Markdown reports, and ``config`` (a TOML
    file's text) and ``flags`` (which override those) when given; its run folder is the
    last line of its output."""
    saved = save_torchscript(model, folder / "labels.pt")
    configured: tuple[str, ...] = ()
    if config:
        (folder / "audit.toml").write_text(config)
        configured = ("--config", str(folder / "audit.toml"))
    result = invoke(
        "run", "--model", str(saved), "--data", str(manifest), "--out", str(folder / "runs"),
        "--explain-samples", "1", "--methods", "saliency", "--format", "html,md",
        "--device", "cpu", *configured, *flags,
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result
