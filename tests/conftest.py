"""Fixtures: tiny TorchScript models and one complete audit run shared by the report tests."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import Result

import auditor.demo
import auditor.pipeline
from auditor.config import AuditConfig
from tests.helpers import (
    TinyNet,
    check_run_folder,
    invoke,
    make_manifest_dataset,
    save_torchscript,
)
from tests.labels import (
    LABEL_FLAGS,
    MARK_CONCEPT,
    ChannelLabels,
    make_label_dataset,
    run_label_audit,
)

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _every_run_folder_is_checked() -> Iterator[None]:
    """Every run folder a test makes in-process is checked against the shipped JSON Schemas
    of metrics.json and manifest.json (see tests.helpers.check_run_folder)."""
    original = auditor.pipeline.run_audit

    def checked(
        config: AuditConfig, command: str | None = None, resume: Path | None = None
    ) -> Path | None:
        folder = original(config, command, resume)
        if folder is not None:  # None: a rank other than 0 of a sharded run
            check_run_folder(folder)
        return folder

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(auditor.pipeline, "run_audit", checked)
        patch.setattr(auditor.demo, "run_audit", checked)
        yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return save_torchscript(TinyNet(), tmp_path_factory.mktemp("model") / "tiny.pt")


@pytest.fixture(scope="session")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_manifest_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def audit(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, manifest: Path
) -> tuple[Result, Path]:
    """One full `auditor run` in-process; returns the click result and the run folder (its
    stage events are in ``events.jsonl`` beside the folder of run folders)."""
    out = tmp_path_factory.mktemp("reports")
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(out),
        "--explain-samples", "3", "--batch-size", "4", "--seed", "1", "--device", "cpu",
        "--patient-column", "patient", "--log-json", str(out.parent / "events.jsonl"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return result, Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def label_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The multi-label model with a known answer (see tests.labels), scripted, and its
    data's manifest."""
    folder = tmp_path_factory.mktemp("labels")
    model = save_torchscript(ChannelLabels(), folder / "labels.pt")
    return model, make_label_dataset(folder / "data")


@pytest.fixture(scope="session")
def label_audit(tmp_path_factory: pytest.TempPathFactory, label_data: tuple[Path, Path]) -> Path:
    """One `auditor run` of :func:`label_data`; returns its run folder."""
    (model, manifest), out = label_data, tmp_path_factory.mktemp("label-runs")
    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(out), *LABEL_FLAGS
    )
    assert result.exit_code == 0, result.output + (result.stderr or "")
    return Path(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def scanner_audit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-label audit of the model with a known answer (tests.labels) on 64 images,
    half from a scanner that prints a mark the model reads as effusion; the mark's masks
    are declared an artefact concept."""
    folder = tmp_path_factory.mktemp("scanner")
    manifest = make_label_dataset(folder / "data", n=64, scanner=True, mark_masks=True)
    result = run_label_audit(ChannelLabels(), manifest, folder, MARK_CONCEPT)
    return Path(result.stdout.strip().splitlines()[-1])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cpu",
        help="cuda or cuda:N also runs tests/test_gpu.py, which compares that device with the CPU",
    )
