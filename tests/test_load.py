"""Loading model files safely, and reading what a model outputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from auditor.errors import ConfigError, ModelError
from auditor.load import (
    OutputKind,
    detect_output_kind,
    file_sha256,
    load_model,
    resolve_device,
    target_scores,
    to_probabilities,
)
from tests.helpers import TinyNet, save_torchscript

CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", ["script", "trace"])
def test_torchscript_loads_in_eval_mode_with_its_hash_and_channels(
    tmp_path: Path, kind: str
) -> None:
    path = save_torchscript(TinyNet(in_channels=1).train(), tmp_path / "m.pt", kind)
    model = load_model(path, CPU)
    assert not model.module.training
    assert model.in_channels == 1
    assert model.sha256 == file_sha256(path) and len(model.sha256) == 64
    assert model.file_size == path.stat().st_size


def test_a_state_dict_is_refused_with_export_advice(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(TinyNet().state_dict(), path)
    with pytest.raises(ModelError, match=r"not TorchScript.*torch\.jit\.script\(model\)\.save"):
        load_model(path, CPU)


def test_a_raw_pickle_is_refused_without_unpickling(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="pickled object"):
        load_model(path, CPU)


def test_no_module_unpickles_arbitrary_objects() -> None:
    sources = "".join(p.read_text() for p in (Path(__file__).parents[1] / "auditor").rglob("*.py"))
    assert "weights_only=False" not in sources
    assert "pickle.load" not in sources and "torch.load(" not in sources


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"\x00\x01garbage" * 10, "not a zip file"), (None, "does not exist")],
)
def test_random_bytes_and_missing_files(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "model.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=message):
        load_model(path, CPU)


def test_a_folder_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path, CPU)


def test_devices() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type in {"cpu", "cuda"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"CUDA is not available.*--device cpu"):
            resolve_device("cuda:0")


CLASSES = ("a", "b", "c")


def test_output_kinds_are_detected() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]])
    assert detect_output_kind(logits, CLASSES, "m.pt") is OutputKind.LOGITS
    assert detect_output_kind(torch.softmax(logits, 1), CLASSES, "m.pt") is OutputKind.PROBABILITIES
    assert (
        detect_output_kind(torch.tensor([[0.3], [-2.0]]), ("neg", "pos"), "m.pt")
        is OutputKind.BINARY_LOGIT
    )
    assert (
        detect_output_kind(torch.tensor([0.3, -2.0]), ("neg", "pos"), "m.pt")
        is OutputKind.BINARY_LOGIT
    )


def test_a_class_count_mismatch_names_both_counts() -> None:
    with pytest.raises(ModelError, match="outputs 3 scores per image but the data has 2 classes"):
        detect_output_kind(torch.zeros(4, 3), ("x", "y"), "m.pt")
    with pytest.raises(ModelError, match="returns"):
        detect_output_kind((torch.zeros(4, 2),), ("x", "y"), "m.pt")


def test_probabilities_from_each_kind() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    torch.testing.assert_close(
        to_probabilities(logits, OutputKind.LOGITS), torch.softmax(logits, 1)
    )
    probabilities = torch.tensor([[0.2, 0.3, 0.5]])
    assert torch.equal(to_probabilities(probabilities, OutputKind.PROBABILITIES), probabilities)
    binary = to_probabilities(torch.tensor([[0.0], [100.0]]), OutputKind.BINARY_LOGIT)
    torch.testing.assert_close(binary, torch.tensor([[0.5, 0.5], [0.0, 1.0]]))


def test_target_scores() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert target_scores(logits, OutputKind.LOGITS, torch.tensor([2, 0])).tolist() == [3.0, 4.0]
    single = torch.tensor([[1.5], [-0.5]])
    assert target_scores(single, OutputKind.BINARY_LOGIT, torch.tensor([1, 0])).tolist() == [
        1.5,
        0.5,
    ]
