"""Vision transformers: token outputs folded into a grid for the CAM family."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

from auditor.architecture import profile_model
from auditor.errors import ConfigError
from auditor.explain import METHODS, ExplainSettings
from auditor.explain.base import fold_tokens, token_grid
from auditor.explain.engine import build_context
from auditor.explain.layers import choose_layer, is_token_shape, target_layer
from auditor.images import Preprocessing
from auditor.load import LoadedModel, OutputKind
from auditor.taps import TappedModel
from tests.helpers import TinyNet, loaded_model, save_torchscript, torchscript_twin


def small_vit() -> VisionTransformer:
    """A two-layer ViT for 32-pixel images with three classes, seeded, in eval mode."""
    torch.manual_seed(0)
    eager = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=3,
    ).eval()  # fmt: skip
    torch.nn.init.normal_(eager.heads.head.weight)  # torchvision starts the head at zero
    return eager


@pytest.fixture(scope="module", params=["script", "export"])
def vit(request: pytest.FixtureRequest) -> tuple[VisionTransformer, LoadedModel]:
    eager = small_vit()
    if request.param == "export":
        return eager, loaded_model(torchscript_twin(eager, "export", 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(eager)
    model = LoadedModel(  # type: ignore[arg-type]
        scripted, TappedModel(scripted), None, "", 0, torch.device("cpu"), 3
    )
    return eager, model


def test_token_grids() -> None:
    assert token_grid(197, None) == (1, 14) and token_grid(16, None) == (0, 4)
    assert token_grid(18, 2) == (2, 4) and token_grid(18, 1) is None
    assert token_grid(0, None) is None and token_grid(5, 9) is None


def test_token_shapes() -> None:
    assert is_token_shape((197, 768)) and is_token_shape((17, 16)) and is_token_shape((16, 8))
    assert not is_token_shape((3,)) and not is_token_shape((8, 4, 4)) and not is_token_shape((3, 4))
    assert is_token_shape((18, 16), prefix=2) and not is_token_shape((18, 16), prefix=1)


def test_fold_tokens_drops_the_class_token_and_keeps_row_major_patches() -> None:
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # 1 + 2×2 tokens
    grid = fold_tokens(tokens, None)
    assert grid.shape == (2, 3, 2, 2)
    torch.testing.assert_close(grid[0, :, 0, 1], tokens[0, 2])  # patch (0, 1) is token 2
    torch.testing.assert_close(grid[1, :, 1, 0], tokens[1, 3])
    with pytest.raises(ValueError, match="token-prefix"):
        fold_tokens(tokens, 2)


def test_the_chosen_layer_is_the_last_with_gradient_on_the_patches(
    vit: tuple[VisionTransformer, LoadedModel],
) -> None:
    _, model = vit
    profile = profile_model(model, (3, 32, 32), 2, 0)
    chosen = choose_layer(model, profile.layers, torch.rand(3, 32, 32), OutputKind.LOGITS)
    # After the last block's attention only the class token reaches the head.
    assert chosen is not None and chosen.path == "encoder.layers.encoder_layer_1.ln_1"


def test_the_target_layer_is_chosen_or_checked(
    vit: tuple[VisionTransformer, LoadedModel],
) -> None:
    _, model = vit
    profile = profile_model(model, (3, 32, 32), 2, 0)
    kind = OutputKind.LOGITS
    chosen = target_layer(model, profile, ExplainSettings(), kind, seed=0)
    assert chosen == "encoder.layers.encoder_layer_1.ln_1"
    named = ExplainSettings(target_layer="encoder.layers.encoder_layer_0")
    assert target_layer(model, profile, named, kind, seed=0) == "encoder.layers.encoder_layer_0"
    # An exported program has no node for a dropout in eval mode: its last MLP module is the
    # linear layer mlp.3, TorchScript's the dropout mlp.4 (a no-op aten::dropout).
    last_mlp = "mlp.4" if model.format == "TorchScript" else "mlp.3"
    later = (
        f"choose one of the later ones: encoder.layers.encoder_layer_1.{last_mlp}, "
        "encoder.layers, encoder.layers.encoder_layer_1, encoder, encoder.ln"
    )
    with pytest.raises(ConfigError) as error:
        target_layer(model, profile, ExplainSettings(target_layer="heads.head"), kind, seed=0)
    assert str(error.value) == (
        "target-layer 'heads.head' is not a module with a (C, H, W) or (tokens, dim) output "
        f"in this model; {later}"
    )
    wrong_prefix = ExplainSettings(target_layer="encoder.layers.encoder_layer_0", token_prefix=2)
    with pytest.raises(ConfigError, match=r"'encoder\.layers\.encoder_layer_0' is not a module"):
        target_layer(model, profile, wrong_prefix, kind, seed=0)
    cnn = loaded_model(torchscript_twin(TinyNet(), "trace", 16))
    cnn_profile = profile_model(cnn, (3, 16, 16), 2, 0)
    assert target_layer(cnn, cnn_profile, ExplainSettings(), kind, seed=0) == "features"
    last_five = r"features\.3, features\.4, features, features\.5, pool$"
    with pytest.raises(ConfigError, match=last_five):
        target_layer(cnn, cnn_profile, ExplainSettings(target_layer="classifier"), kind, seed=0)


def test_grad_cam_on_tokens_equals_the_eager_hook_reference(
    vit: tuple[VisionTransformer, LoadedModel],
) -> None:
    eager, model = vit
    layer = "encoder.layers.encoder_layer_1.ln_1"
    x = torch.rand(2, 3, 32, 32)
    targets = torch.tensor([0, 2])
    settings = ExplainSettings(methods=("grad-cam", "grad-cam-plus-plus", "score-cam"))
    context, _, reasons = build_context(model, OutputKind.LOGITS, layer, settings, Preprocessing(3))
    assert not reasons
    passes = context.passes(x, targets)
    assert passes.activations.shape == (2, 16, 4, 4)

    captured: list[torch.Tensor] = []
    module = eager.encoder.layers.encoder_layer_1.ln_1
    handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = eager(x)
    finally:
        handle.remove()
    (grad,) = torch.autograd.grad(logits.gather(1, targets.view(-1, 1)).sum(), captured[0])
    activations = captured[0][:, 1:].transpose(1, 2).reshape(2, 16, 4, 4)
    gradients = grad[:, 1:].transpose(1, 2).reshape(2, 16, 4, 4)
    expected = (gradients.mean(dim=(2, 3), keepdim=True) * activations).sum(1)
    grad_cam = METHODS["grad-cam"](settings).from_passes(passes, context)  # type: ignore[attr-defined]
    torch.testing.assert_close(grad_cam, expected.detach(), rtol=1e-4, atol=1e-6)
    assert float(expected.detach().abs().sum()) > 0, "the reference map is not blank"


def test_a_vision_transformer_audit_runs_every_applicable_method(
    tmp_path: Path, manifest: Path
) -> None:
    import pandas as pd

    from tests.helpers import invoke

    eager = small_vit()
    binary = VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=2,
    ).eval()  # fmt: skip
    binary.load_state_dict(
        {k: v for k, v in eager.state_dict().items() if not k.startswith("heads")}, strict=False
    )
    torch.nn.init.normal_(binary.heads.head.weight)
    model = save_torchscript(binary, tmp_path / "vit.pt")
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(tmp_path / "out"),
        "--explain-samples", "1", "--device", "cpu", "--maximise-steps", "8",
        "--methods", "grad-cam,score-cam,cam,guided-backprop,saliency",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    records = pd.read_csv(folder / "explanations.csv")
    assert set(records["method"]) == {"grad-cam", "score-cam", "saliency"}
    assert set(records["status"]) == {"ok"}
    html = (folder / "report.html").read_text()
    assert "encoder.layers.encoder_layer_1.ln_1" in html
    assert "the model has no ReLU" in html and "global-average-pooling + linear head" in html
