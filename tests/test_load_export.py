"""Loading ``torch.export`` programs (``.pt2``): what is read, and what is refused in one line."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import Result
from torch import nn

from auditor.errors import ModelError
from auditor.load import load_model
from auditor.taps import TappedExport
from tests.helpers import TinyNet, invoke, save_exported, save_torchscript

CPU = torch.device("cpu")


def test_an_exported_program_loads_and_equals_its_eager_twin_at_any_batch(tmp_path: Path) -> None:
    eager = TinyNet().eval()
    model = load_model(save_exported(eager, tmp_path / "m.pt2"), CPU)
    assert model.format == "torch.export" and isinstance(model.tapped, TappedExport)
    assert model.in_channels == 3
    for batch in (1, 5):
        x = torch.rand(batch, 3, 32, 32)
        torch.testing.assert_close(model.module(x), eager(x), rtol=0, atol=0)
        torch.testing.assert_close(model.tapped(x)[0], eager(x), rtol=0, atol=0)


def test_another_image_size_fails_as_a_model_error_would(tmp_path: Path) -> None:
    model = load_model(save_exported(TinyNet(), tmp_path / "m.pt2"), CPU)
    with pytest.raises(AssertionError, match=r"Guard failed: x.size\(\)\[2\] == 32"):
        model.tapped(torch.rand(2, 3, 48, 48))


def test_a_fixed_batch_size_is_refused_with_the_dynamic_shapes_advice(tmp_path: Path) -> None:
    program = torch.export.export(TinyNet().eval(), (torch.rand(1, 3, 32, 32),))
    torch.export.save(program, tmp_path / "fixed.pt2")
    with pytest.raises(ModelError, match=r"exactly 1 image.*Dim\('batch'\)"):
        load_model(tmp_path / "fixed.pt2", CPU)


def test_a_program_exported_in_training_mode_is_refused(tmp_path: Path) -> None:
    batch = torch.export.Dim("batch")
    program = torch.export.export(
        TinyNet().train(), (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},)
    )
    torch.export.save(program, tmp_path / "train.pt2")
    with pytest.raises(ModelError, match=r"training mode \(each call updates features\.1\."):
        load_model(tmp_path / "train.pt2", CPU)


def _rewritten(source: Path, target: Path, suffix: str, data: bytes) -> Path:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for name in old.namelist():
            new.writestr(name, data if name.endswith(suffix) else old.read(name))
    return target


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.putenv, ("AUDITOR_UNPICKLED", "1"))


def test_a_payload_that_only_a_full_unpickler_reads_is_refused_unread(tmp_path: Path) -> None:
    """torch.export.load falls back to an unrestricted unpickler for sample inputs that the
    weights-only one refuses: that file would run code at load time."""
    good = save_exported(TinyNet(), tmp_path / "good.pt2")
    buffer = io.BytesIO()
    torch.save((_RunsCode(),), buffer)
    bad = _rewritten(good, tmp_path / "bad.pt2", "sample_inputs/model.pt", buffer.getvalue())
    with pytest.raises(ModelError, match="does not unpickle"):
        load_model(bad, CPU)
    assert "AUDITOR_UNPICKLED" not in os.environ
    with zipfile.ZipFile(good) as archive:
        name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = archive.read(name).replace(b'"use_pickle": false', b'"use_pickle": true', 1)
    pickled = _rewritten(good, tmp_path / "w.pt2", "model_weights_config.json", config)
    with pytest.raises(ModelError, match=r"pickled payloads \(features\.0\.weight\)"):
        load_model(pickled, CPU)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: torch.save(TinyNet().state_dict(), p),
            "zip archive but not a torch.export program",
        ),
        (lambda p: p.write_bytes(b"\x00junk" * 20), "not a pt2 archive"),
    ],
)
def test_other_files_named_pt2_are_one_line_errors(
    tmp_path: Path, make: object, message: str
) -> None:
    path = tmp_path / "m.pt2"
    make(path)  # type: ignore[operator]
    with pytest.raises(ModelError, match=message) as error:
        load_model(path, CPU)
    assert "\n" not in str(error.value) and "torch.export.save" in str(error.value)


def test_an_aotinductor_package_is_not_a_program(tmp_path: Path) -> None:
    with zipfile.ZipFile(tmp_path / "aoti.pt2", "w") as archive:
        archive.writestr("aoti/archive_format", "pt2")
        archive.writestr("aoti/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelError, match="AOTInductor package"):
        load_model(tmp_path / "aoti.pt2", CPU)


def test_the_format_comes_from_the_contents_not_the_name(tmp_path: Path) -> None:
    model = load_model(save_torchscript(TinyNet(), tmp_path / "script.pt2"), CPU)
    assert model.format == "TorchScript"


def test_a_program_with_two_inputs_is_refused(tmp_path: Path) -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.net(x) + y.mean()

    batch = torch.export.Dim("batch")
    example = (torch.rand(2, 3, 32, 32), torch.rand(2))
    program = torch.export.export(Two().eval(), example, dynamic_shapes=({0: batch}, None))
    torch.export.save(program, tmp_path / "two.pt2")
    with pytest.raises(ModelError, match="takes 2 inputs"):
        load_model(tmp_path / "two.pt2", CPU)


def test_an_audit_of_the_exported_twin_writes_the_scripted_models_results(
    audit: tuple[Result, Path], tmp_path: Path, manifest: Path
) -> None:
    """The shared audit's model (tests/conftest.py: TinyNet seeded 0, scripted) exported
    instead, audited with the same flags: every CSV and the metrics are the same bytes."""
    torch.manual_seed(0)
    model = save_exported(TinyNet(), tmp_path / "tiny.pt2")
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(tmp_path / "out"),
        "--explain-samples", "3", "--batch-size", "4", "--seed", "1", "--device", "cpu",
        "--patient-column", "patient", "--format", "html,md", "--history", "-",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    exported, scripted = Path(result.stdout.strip().splitlines()[-1]), audit[1]
    files = [*sorted(p.name for p in scripted.glob("*.csv")), "metrics.json"]
    assert sorted(p.name for p in exported.glob("*.csv")) == files[:-1]
    different = [f for f in files if (exported / f).read_bytes() != (scripted / f).read_bytes()]
    assert different == []
    assert "torch.export" in (exported / "report.html").read_text(encoding="utf-8")


def _with_members(source: Path, target: Path, members: dict[str, bytes]) -> Path:
    """``source`` with ``members`` added (names relative to the archive's root folder)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        root = old.namelist()[0].split("/")[0]
        for name in old.namelist():
            new.writestr(name, old.read(name))
        for name, data in members.items():
            new.writestr(f"{root}/{name}", data)
    return target


def test_a_second_program_or_an_opaque_payload_is_refused_before_torch_reads_it(
    tmp_path: Path,
) -> None:
    """torch.export.load loads every program under models/, and reads opaque constants
    with plain pickle whatever torch.load is told: either would run code at load time."""
    good = save_exported(TinyNet(), tmp_path / "good.pt2")
    with zipfile.ZipFile(good) as archive:
        program = next(archive.read(n) for n in archive.namelist() if n.endswith("model.json"))
    second = _with_members(good, tmp_path / "two.pt2", {"models/other.json": program})
    with pytest.raises(ModelError, match=r"programs \['models/model.json', 'models/other.json'\]"):
        load_model(second, CPU)
    payload = pickle.dumps(_RunsCode())
    opaque = _with_members(good, tmp_path / "opaque.pt2", {"data/constants/opaque_obj_0": payload})
    with pytest.raises(ModelError, match="pickled payloads"):
        load_model(opaque, CPU)
    assert "AUDITOR_UNPICKLED" not in os.environ
    damaged = _with_members(good, tmp_path / "d.pt2", {"data/weights/x_weights_config.json": b"["})
    with pytest.raises(ModelError, match=r"damaged x_weights_config\.json"):
        load_model(damaged, CPU)


def test_images_by_keyword_or_a_bounded_batch_are_refused_at_load(tmp_path: Path) -> None:
    class ByKeyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = TinyNet()

        def forward(self, *, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

    batch = torch.export.Dim("batch")
    example = torch.rand(2, 3, 32, 32)
    program = torch.export.export(
        ByKeyword().eval(), (), {"x": example}, dynamic_shapes={"x": {0: batch}}
    )
    torch.export.save(program, tmp_path / "keyword.pt2")
    with pytest.raises(ModelError, match="takes its images by keyword or in a list"):
        load_model(tmp_path / "keyword.pt2", CPU)
    bounded = torch.export.Dim("batch", max=8)
    program = torch.export.export(TinyNet().eval(), (example,), dynamic_shapes=({0: bounded},))
    torch.export.save(program, tmp_path / "bounded.pt2")
    with pytest.raises(ModelError, match="batches of at most 8 images"):
        load_model(tmp_path / "bounded.pt2", CPU)


def test_a_bias_free_head_is_found_after_the_default_decompositions(tmp_path: Path) -> None:
    """``run_decompositions()`` turns a bias-free linear layer into ``mm(x, t(w))``."""
    net = TinyNet().eval()
    net.classifier = nn.Linear(8, 2, bias=False)
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (torch.rand(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    torch.export.save(program.run_decompositions(), tmp_path / "mm.pt2")
    head, reason = load_model(tmp_path / "mm.pt2", CPU).tapped.linear_head
    assert head is not None, reason
    torch.testing.assert_close(head.weight, net.classifier.weight.detach())


def test_a_program_from_another_schema_says_why_it_cannot_be_read(tmp_path: Path) -> None:
    """torch.export.load logs the cause and raises a generic error: the cause is the line."""
    good = save_exported(TinyNet(), tmp_path / "good.pt2")
    with zipfile.ZipFile(good) as archive:
        name = next(n for n in archive.namelist() if n.endswith("models/model.json"))
        program = json.loads(archive.read(name))
    program["schema_version"]["major"] = 99
    future = _rewritten(
        good, tmp_path / "future.pt2", "models/model.json", json.dumps(program).encode()
    )
    with pytest.raises(ModelError, match=r"schema version .*99.* does not match"):
        load_model(future, CPU)
