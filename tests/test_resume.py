"""Resumable runs: an audit killed with SIGKILL goes on when the same command runs again,
and its run folder holds the same results as an uninterrupted run's (tests/conftest.py's
shared audit, same model, data and flags), byte for byte.

The run is killed three times, each time just after a stage's ``stage_end`` event (its
result is saved before that event): after the evaluation, after the explanations and
after the trust checks; the fourth start finishes. Between the kills there is only the
hidden ``.partial`` folder, never a folder with a final name.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result

from auditor.checkpoint import Checkpoint, CheckpointError, read_value, write_value
from auditor.data import discover
from auditor.evaluate import EvaluationSettings, Memo, evaluate
from auditor.images import model_preprocessing
from auditor.load import OutputKind, load_model
from auditor.measure.records import TrustSettings
from tests.helpers import assert_same_results, invoke, one_line_error

KILLED_AFTER = ("evaluate", "explain", "trust")
RUN = [sys.executable, "-m", "auditor", "run"]


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _killed_after(command: list[str], events: Path, stage: str) -> list[dict]:
    """Start ``command``, SIGKILL it once ``stage`` has ended; the events it wrote."""
    seen = len(_events(events))
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = _events(events)[seen:]
        if any(e["event"] == "stage_end" and e["stage"] == stage for e in new):
            process.send_signal(signal.SIGKILL)
            process.wait()
            return new
        if process.poll() is not None:
            pytest.fail(f"the run ended before {stage} was killed: {process.stderr.read()}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"{stage} did not end within 300 s")


def test_a_run_killed_three_times_resumes_to_the_uninterrupted_results(
    audit: tuple[Result, Path], tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    command = [
        *RUN, "--model", str(tiny_model), "--data", str(manifest), "--out", str(out),
        "--explain-samples", "3", "--batch-size", "4", "--seed", "1", "--device", "cpu",
        "--patient-column", "patient", "--history", "-", "--log-json", str(events),
    ]  # fmt: skip
    resumed: list[list[str]] = []
    for stage in KILLED_AFTER:
        new = _killed_after(command, events, stage)
        resumed.append([e["stage"] for e in new if e["event"] == "stage_resumed"])
        (partial,) = list(out.iterdir())
        assert partial.name.startswith(".") and partial.name.endswith(".partial")
        assert (partial / "checkpoint" / stage / "value.json").is_file()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    final = [e["stage"] for e in _events(events) if e["event"] == "stage_resumed"]
    assert resumed == [[], ["evaluate"], ["evaluate", "robustness", "concepts", "explain"]]
    assert final[-5:] == ["evaluate", "robustness", "concepts", "explain", "trust"]
    (folder,) = list(out.iterdir())
    assert folder == Path(done.stdout.strip().splitlines()[-1])
    assert not (folder / "checkpoint").exists()
    assert_same_results(audit[1], folder)
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "read back from its checkpoint: evaluate, robustness, concepts, explain and" in report


def test_resume_names_a_partial_folder_of_this_audit(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    flags = ["--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path)]
    one_line_error(invoke("run", *flags, "--resume", str(tmp_path)), "not a partial run folder")
    other = tmp_path / ".tiny-20260101T000000Z.partial" / "checkpoint"
    other.mkdir(parents=True)
    (other / "run.json").write_text(json.dumps({"identity": "another", "started": "x"}))
    result = invoke("run", *flags, "--resume", str(other.parent))
    one_line_error(result, "is another audit's", "run the command it was started with")
    assert list(tmp_path.iterdir()) == [other.parent]  # nothing else made, nothing removed


def test_the_checkpoint_codec_round_trips_exactly(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "name": pd.Series(["a", None, "c"], dtype="string"),
            "group": pd.Series(["x", "y", "x"], dtype="category"),
            "count": pd.Series([1, None, 3], dtype="Int64"),
            "share": [0.1, float("nan"), 1 / 3],
            "flag": [True, False, True],
            "objects": ["p", 2, None],
        },
        index=pd.Index([5, 7, 9], name="row"),
    )
    value = {
        ("key", 1): frame,
        "settings": TrustSettings(trust_budget=2.5),
        "kind": OutputKind.LOGITS,
        "array": np.arange(6, dtype=np.float32).reshape(2, 3),
        "numbers": (np.int64(4), 1e-300, float("inf"), [None, True]),
    }
    write_value(value, tmp_path / "value")
    back = read_value(tmp_path / "value")
    pd.testing.assert_frame_equal(back[("key", 1)], frame)
    assert back["settings"] == TrustSettings(trust_budget=2.5)
    assert back["kind"] is OutputKind.LOGITS
    assert back["array"].dtype == np.float32 and (back["array"] == value["array"]).all()
    assert back["numbers"] == value["numbers"] and type(back["numbers"][0]) is np.int64


def test_the_codec_rebuilds_no_class_outside_auditor(tmp_path: Path) -> None:
    write_value(OutputKind.LOGITS, tmp_path / "value")
    text = (tmp_path / "value" / "value.json").read_text()
    (tmp_path / "value" / "value.json").write_text(text.replace("auditor.output_kind", "os"))
    with pytest.raises(CheckpointError, match="not an Auditor class"):
        read_value(tmp_path / "value")
    with pytest.raises(CheckpointError, match="cannot save a"):
        write_value(object(), tmp_path / "other")


def test_an_evaluation_stopped_mid_way_goes_on_from_its_last_saved_chunk(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    """Chunks of 4 images (2 batches of 2): stopped in the third chunk, the evaluation
    resumed from the saved checkpoint scores only the third and later chunks, and its
    predictions, intensities and metrics equal an unchunked evaluation's."""
    model = load_model(tiny_model, torch.device("cpu"))
    dataset = discover(manifest, None)
    preprocessing = model_preprocessing(dataset, 3, None, None, None)
    settings = EvaluationSettings(batch_size=2)
    full = evaluate(model, dataset, preprocessing, OutputKind.LOGITS, settings)
    computed: list[str] = []

    def memo(checkpoint: Checkpoint, stop_at: int | None) -> Memo:
        def chunk(name: str, compute: Callable[[], Any]) -> Any:
            def counted() -> Any:
                if len(computed) == stop_at:
                    raise KeyboardInterrupt
                computed.append(name)
                return compute()

            return checkpoint.stage(name, counted)

        return chunk

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            model, dataset, preprocessing, OutputKind.LOGITS, settings,
            memo=memo(Checkpoint(folder), 2), chunk_images=4,
        )  # fmt: skip
    assert computed == ["evaluate-000000000", "evaluate-000000004"]
    again = evaluate(
        model, dataset, preprocessing, OutputKind.LOGITS, settings,
        memo=memo(Checkpoint(folder), None), chunk_images=4,
    )  # fmt: skip
    assert computed[2:] == ["evaluate-000000008", "evaluate-000000012"]
    pd.testing.assert_frame_equal(again.predictions, full.predictions)
    pd.testing.assert_frame_equal(again.excluded, full.excluded)
    np.testing.assert_array_equal(again.intensities, full.intensities)
    assert repr(again.metrics) == repr(full.metrics)  # NaN != NaN, not in their repr
    assert again.data_sha256 == full.data_sha256
