"""Property: a data folder with bad entries mixed into good ones never breaks the run.

Hypothesis draws class folders holding good images and bad entries of every kind the
README's reliability section lists. Reading and evaluating them either stops with one
:class:`~auditor.errors.AuditError` (the CLI's one ``Error:`` line) or accounts for every
file: ``n_images + n_excluded`` is the number of candidate files, and every bad entry is
excluded with a reason. Any other exception is a traceback a user would see, and fails.
"""

from __future__ import annotations

import io
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from auditor.data import discover
from auditor.errors import AuditError
from auditor.evaluate import EvaluationSettings, evaluate, probe_output_kind
from auditor.images import model_preprocessing
from auditor.load import LoadedModel, load_model
from tests.helpers import TinyNet, save_torchscript


def _png(seed: int, size: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    data = bytearray(_png(0, 2))
    header = data[12:29]
    header[4:12] = (60000).to_bytes(4, "big") * 2
    data[12:29] = header
    data[29:33] = zlib.crc32(bytes(header)).to_bytes(4, "big")
    return bytes(data)


def _write(path: Path, kind: str, seed: int) -> None:
    """One entry of ``kind`` at ``path`` (its parent exists)."""
    if kind == "good":
        path.write_bytes(_png(seed))
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 3)
    elif kind == "truncated":
        path.write_bytes(_png(seed)[:60])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.with_suffix(".txt").write_text("notes")
    elif kind == "bomb":
        path.write_bytes(_bomb())
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dead link":
        path.symlink_to(path.parent / "nowhere.png")
    elif kind == "undecodable name":
        (path.parent / os.fsdecode(b"\xff" + path.name.encode())).write_bytes(_png(seed))
    elif kind == "other size":
        path.write_bytes(_png(seed, size=24))


BAD = ["corrupt", "truncated", "empty", "text", "bomb", "fifo", "dead link", "undecodable name"]
ENTRIES = st.lists(
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["good", "other size", *BAD])),
    min_size=1,
    max_size=10,
)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.manual_seed(0)
    path = save_torchscript(TinyNet(), tmp_path_factory.mktemp("m") / "tiny.pt", size=16)
    return load_model(path, torch.device("cpu"))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(entries=ENTRIES)
def test_bad_entries_are_excluded_with_a_reason_or_the_run_stops_in_one_line(
    model: LoadedModel, entries: list[tuple[str, str]]
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for name in ("a", "b"):
            (root / name).mkdir()
            (root / name / "seed.png").write_bytes(_png({"a": 1, "b": 2}[name]))
        for n, (label, kind) in enumerate(entries):
            _write(root / label / f"{n}.png", kind, seed=n)
        candidates = sum(1 for p in root.rglob("*") if not p.is_dir())
        bad = sum(1 for _, kind in entries if kind in BAD)

        try:
            dataset = discover(root)
            preprocessing = model_preprocessing(dataset, 3, None, None, None)
            kind = probe_output_kind(model, dataset, preprocessing)
            evaluation = evaluate(model, dataset, preprocessing, kind, EvaluationSettings())
        except AuditError as error:
            assert "\n" not in str(error), "the CLI prints one line"
            return

        excluded = evaluation.excluded
        assert evaluation.metrics.n_images + len(excluded) == candidates
        assert len(excluded) >= bad, "every bad entry is excluded"
        assert (excluded["reason"].str.len() > 0).all(), "each exclusion says why"
