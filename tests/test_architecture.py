"""The architecture profile of a hand-sized network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from auditor.architecture import choose_target_layer, layers_frame, profile_model
from auditor.load import load_model
from tests.helpers import TinyNet, save_torchscript


@pytest.mark.parametrize("kind", ["trace", "export"])
def test_profile_of_tiny_net(tmp_path: Path, kind: str) -> None:
    path = tmp_path / ("tiny.pt2" if kind == "export" else "tiny.pt")
    model = load_model(save_torchscript(TinyNet(), path, kind, size=16), torch.device("cpu"))
    profile = profile_model(model, (3, 16, 16), batch_size=4)
    layers = {layer.path: layer for layer in profile.layers}
    assert list(layers) == [
        "features",
        "features.0",
        "features.1",
        "features.2",
        "features.3",
        "features.4",
        "features.5",
        "pool",
        "classifier",
    ], "definition order, a parent before its children"
    assert layers["features.0"].output_shape == (6, 16, 16)
    assert layers["features.3"].output_shape == (6, 8, 8)
    assert layers["pool"].output_shape == (8, 1, 1)
    assert layers["classifier"].output_shape == (2,)
    assert layers["features.0"].parameters == 3 * 6 * 9 + 6
    assert layers["features"].parameters == 168 + 12 + 440
    assert profile.parameters == 638
    conv_flops = 2 * 6 * 16 * 16 * 27 + 2 * 8 * 8 * 8 * 54
    assert layers["features"].flops == conv_flops
    assert profile.flops_per_image == conv_flops + 2 * 2 * 8
    assert profile.latency_ms > 0 and profile.throughput > 0 and profile.peak_memory_bytes > 0
    assert profile.sha256 == model.sha256 and profile.batch_size == 4
    chosen = choose_target_layer(profile.layers)
    assert chosen is not None and chosen.path == "features"
    frame = layers_frame(profile)
    assert frame["output_shape"].tolist()[1] == "6×16×16"
    assert str(frame["parameters"].dtype) == "int64"


def test_no_spatial_layer_means_no_target_layer(tmp_path: Path) -> None:
    class Flat(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 4)  # 4×4 input → 1×1 output
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).flatten(1))

    model = load_model(save_torchscript(Flat(), tmp_path / "flat.pt"), torch.device("cpu"))
    profile = profile_model(model, (3, 4, 4), batch_size=2)
    assert choose_target_layer(profile.layers) is None
