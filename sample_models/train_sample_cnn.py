"""Train the sample CNN that Auditor's demo and tests audit, and save it as TorchScript.

The model is a small plain CNN trained on the synthetic dermoscopy-like data set of
:mod:`auditor.synthetic`, whose train split carries a planted shortcut: a corner marker
drawn on most malignant and few benign images. The model learns it in part, which the audit
should reveal; this script prints the evidence (validation accuracy with and without the
marker, per class), measured on a freshly generated validation split where the marker is
independent of the class.

Usage::

    .venv/bin/python sample_models/train_sample_cnn.py [--out sample_models/sample_cnn.pt]
        [--n-train 2000] [--n-val 400] [--epochs 12] [--seed 0]

Training is deterministic (fixed seeds, deterministic algorithms, two threads) and takes
a few minutes on two CPU cores. Inputs are ``(B, 3, 64, 64)`` floats in ``[0, 1]`` with no
normalisation; outputs are two logits, in the order of :data:`auditor.synthetic.CLASSES`.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from auditor.synthetic import CLASSES, SyntheticImage, generate

DEFAULT_OUT = Path(__file__).resolve().parent / "sample_cnn.pt"


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution, batch norm and ReLU, keeping the spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class SampleCNN(nn.Module):
    """Small plain CNN for 64x64 RGB images.

    ``features``: a stem conv block (3->16 at 64x64), then three stages of 2x2 max pool +
    conv block (16->32 at 32x32, 32->64 at 16x16, 64->96 at 8x8) and a final conv block
    (96->96 at 8x8); then ``pool`` (global average) and ``classifier`` (linear, 96 -> number
    of classes). Every conv block is ``Sequential(Conv2d, BatchNorm2d, ReLU)``.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_block(3, 16),  # stem, 64x64
            nn.MaxPool2d(2),
            conv_block(16, 32),  # 32x32
            nn.MaxPool2d(2),
            conv_block(32, 64),  # 16x16
            nn.MaxPool2d(2),
            conv_block(64, 96),  # 8x8
            conv_block(96, 96),  # final block, 8x8
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(96, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of ``(B, 3, 64, 64)`` images in ``[0, 1]``."""
        x = self.features(x)
        x = self.pool(x)
        x = torch.flatten(x, 1)
        logits: torch.Tensor = self.classifier(x)
        return logits


def to_tensors(samples: Sequence[SyntheticImage]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as a float ``(N, 3, 64, 64)`` tensor in ``[0, 1]`` and labels as indices."""
    images = np.stack([s.image for s in samples]).astype(np.float32) / 255.0
    labels = np.array([CLASSES.index(s.label) for s in samples], dtype=np.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels)


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 200) -> torch.Tensor:
    """Predicted class indices."""
    model.eval()
    preds = [model(images[i : i + batch_size]).argmax(1) for i in range(0, len(images), batch_size)]
    return torch.cat(preds)


def rate(correct: torch.Tensor, select: torch.Tensor) -> str:
    """``"acc (k/n)"`` for the selected items."""
    n = int(select.sum())
    if n == 0:
        return "n/a (0)"
    k = int(correct[select].sum())
    return f"{k / n:6.1%} ({k}/{n})"


def main(argv: Sequence[str] | None = None) -> int:
    """Train, evaluate and save the sample model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="TorchScript file")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-val", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    start = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)

    train = list(generate("train", args.n_train, seed=args.seed))
    val = list(generate("val", args.n_val, seed=args.seed))
    x_train, y_train = to_tensors(train)
    x_val, y_val = to_tensors(val)
    print(
        f"data: {len(train)} train, {len(val)} val images ({time.perf_counter() - start:.1f} s)",
        flush=True,
    )

    model = SampleCNN(num_classes=len(CLASSES))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (len(train) + args.batch_size - 1) // args.batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    order_gen = torch.Generator().manual_seed(args.seed)

    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train), generator=order_gen)
        total_loss, total_correct = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach()) * len(idx)
            total_correct += int((logits.argmax(1) == yb).sum())
        print(
            f"epoch {epoch:2d}/{args.epochs}: loss {total_loss / len(train):.4f}, "
            f"train acc {total_correct / len(train):.1%} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )

    model.eval()
    correct = predict(model, x_val) == y_val
    marker = torch.tensor([s.marker for s in val])
    print(f"val accuracy: {rate(correct, torch.ones_like(correct))}")
    print(f"  with marker:    {rate(correct, marker)}")
    print(f"  without marker: {rate(correct, ~marker)}")
    for c, name in enumerate(CLASSES):
        is_c = y_val == c
        print(
            f"  {name:9s}: all {rate(correct, is_c)}, with marker {rate(correct, is_c & marker)}, "
            f"without marker {rate(correct, is_c & ~marker)}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, but it is the format that
        # Auditor audits.
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(args.out))
    print(
        f"saved {args.out} ({args.out.stat().st_size / 1024:.0f} KiB), "
        f"total {time.perf_counter() - start:.0f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
