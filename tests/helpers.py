"""Tiny real models and generated images shared by the tests (no downloads)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner, Result
from PIL import Image
from torch import nn

from auditor.cli import cli

XSS_CLASS = "<script>alert(1)</script>"


class TinyNet(nn.Module):
    """conv-bn-relu-pool-conv-relu → global average pool → linear."""

    def __init__(self, in_channels: int = 3, outputs: int = 2, softmax: bool = False) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, outputs)
        self.softmax = softmax

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier(self.pool(self.features(x)).flatten(1))
        return torch.softmax(logits, dim=1) if self.softmax else logits


def save_torchscript(module: nn.Module, path: Path, kind: str = "script", size: int = 32) -> Path:
    """Save ``module`` (in eval mode) as TorchScript, scripted or traced."""
    module = module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "script":
            compiled = torch.jit.script(module)
        else:
            channels = next(m for m in module.modules() if isinstance(m, nn.Conv2d)).in_channels
            compiled = torch.jit.trace(module, torch.rand(1, channels, size, size))
        compiled.save(str(path))
    return path


def write_png(path: Path, seed: int, size: int = 32, mode: str = "RGB") -> Path:
    """A deterministic random PNG."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def write_manifest(folder: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV manifest with the rows' keys as columns."""
    path = folder / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_manifest_dataset(
    folder: Path, per_class: int = 6, classes: tuple[str, ...] = ("benign", XSS_CLASS)
) -> Path:
    """Images, masks and metadata for ``classes``, plus one corrupt PNG; returns the manifest."""
    rows = []
    for k, name in enumerate(classes):
        for i in range(per_class):
            image = write_png(folder / "images" / f"c{k}_{i}.png", seed=100 * k + i)
            mask = np.zeros((32, 32), np.uint8)
            mask[8:24, 8:24] = 255
            mask_path = folder / "masks" / f"c{k}_{i}.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(mask_path)
            rows.append(
                {
                    "path": image.relative_to(folder).as_posix(),
                    "label": name,
                    "mask": mask_path.relative_to(folder).as_posix(),
                    "site": "A" if i % 2 else "B",
                }
            )
    corrupt = folder / "images" / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    rows.append({"path": "images/corrupt.png", "label": classes[0], "mask": "", "site": "A"})
    return write_manifest(folder, rows)


def invoke(*args: str) -> Result:
    """Run the ``auditor`` CLI in-process."""
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result, *fragments: str) -> None:
    """The run failed with exit 1 and one ``Error: …`` line containing ``fragments``."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
