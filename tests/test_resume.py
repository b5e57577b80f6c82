"""Resumable runs: an audit killed with SIGKILL goes on when the same command runs again,
and its run folder holds the same results as an uninterrupted run's (tests/conftest.py's
shared audit, same model, data and flags), byte for byte.

The run is killed three times: just after the evaluation's ``stage_end`` event (a
stage's result is saved before that event), in the middle of the trust checks (once the
first batch of maps on a randomised model is saved), and just after the trust checks'
``stage_end``; the fourth start finishes. Between the kills there is only the hidden
``.partial`` folder, never a folder with a final name.
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

from auditor.aggregate.reproducibility import resumed_text
from auditor.architecture import profile_model
from auditor.checkpoint import Checkpoint, CheckpointError, read_value, write_value
from auditor.data import discover
from auditor.evaluate import EvaluationSettings, evaluate
from auditor.events import close_events, configure_events
from auditor.explain import ExplainSettings
from auditor.explain.engine import explain_cases
from auditor.images import model_preprocessing
from auditor.load import OutputKind, load_model
from auditor.measure import Trust, measure_trust
from auditor.measure.records import TrustSettings
from auditor.select import select_cases
from tests.helpers import assert_same_results, invoke, one_line_error

KILLED_AFTER = ("evaluate", "trust-randomisation-*", "trust")
"""Where the run is killed: once a stage has ended, or once a part of one is saved."""
RUN = [sys.executable, "-m", "auditor", "run"]


def _events(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _killed_after(
    command: list[str], events: Path, out: Path, stage: str, sent: int = signal.SIGKILL
) -> tuple[list[dict], subprocess.Popen[str]]:
    """Start ``command``, send it ``sent`` once ``stage`` has ended (or, for a part's name
    pattern, once a part of that name is saved in the checkpoint); the events it wrote,
    and the ended process."""
    seen = len(_events(events))
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        new = _events(events)[seen:]
        ended = any(e["event"] == "stage_end" and e["stage"] == stage for e in new)
        if ended or any(out.glob(f".*.partial/checkpoint/{stage}")):
            process.send_signal(sent)
            process.wait(timeout=120)
            return _events(events)[seen:], process
        if process.poll() is not None:
            pytest.fail(f"the run ended before {stage} was killed: {process.communicate()[1]}")
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
    parts: list[dict[str, int]] = []
    for stage in KILLED_AFTER:
        new, _ = _killed_after(command, events, out, stage)
        resumed.append([e["stage"] for e in new if e["event"] == "stage_resumed"])
        parts += [e["kinds"] for e in new if e["event"] == "parts_resumed"]
        (partial,) = list(out.iterdir())
        assert partial.name.startswith(".") and partial.name.endswith(".partial")
        assert list((partial / "checkpoint").glob(f"{stage}/value.json"))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    final = [e["stage"] for e in _events(events) if e["event"] == "stage_resumed"]
    assert resumed == [[], ["evaluate"], ["evaluate", "robustness", "concepts", "explain"]]
    assert len(parts) == 1, "the third start read back parts of the trust stage, told once"
    assert parts[0]["trust-maps"] > 0, "each case's map checks"
    assert parts[0]["trust-randomisation"] > 0, "the batch it was killed after"
    assert set(parts[0]) <= {"trust-maps", "trust-randomisation", "trust-stability"}, parts
    assert final[-5:] == ["evaluate", "robustness", "concepts", "explain", "trust"]
    assert "auditor: resuming the interrupted run in " in done.stderr
    assert "auditor: trust read back from the checkpoint" in done.stderr
    (folder,) = list(out.iterdir())
    assert folder == Path(done.stdout.strip().splitlines()[-1])
    assert not (folder / "checkpoint").exists()
    assert_same_results(audit[1], folder)
    report = (folder / "report.html").read_text(encoding="utf-8")
    assert "read back from its checkpoint: evaluate, robustness, concepts, explain and" in report


def test_a_run_stopped_by_sigterm_says_where_its_stages_are_kept_and_exits_143(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    """A scheduler's time limit sends SIGTERM before SIGKILL: the run stops with status
    143, its log says where the finished stages are and how to go on, and its events end
    with ``run_failed``."""
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    command = [
        *RUN, "--model", str(tiny_model), "--data", str(manifest), "--out", str(out),
        "--explain-samples", "3", "--seed", "1", "--device", "cpu", "--history", "-",
        "--log-json", str(events),
    ]  # fmt: skip
    new, process = _killed_after(command, events, out, "evaluate", signal.SIGTERM)
    assert process.returncode == 128 + signal.SIGTERM
    (partial,) = list(out.iterdir())
    assert (partial / "checkpoint" / "evaluate" / "value.json").is_file()
    log = process.communicate()[1]
    assert f"the finished stages are kept in {partial}: run the same command again" in log
    assert new[-1]["event"] == "run_failed" and "SIGTERM" in new[-1]["error"]


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


def test_parts_read_back_are_told_once_per_stage_as_json_and_as_a_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unfinished stage's parts read back are one ``parts_resumed`` event with their
    number by kind (an audit can have thousands), not an event per part; a stage read
    back is a ``stage_resumed`` event; each is a plain line that says so."""
    saved = ["trust-maps-000000", "trust-maps-000001", "trust-randomisation-001-cam-000000-000002"]
    for name in saved:
        write_value(len(name), tmp_path / "checkpoint" / name)
    write_value("done", tmp_path / "checkpoint" / "explain")
    log = tmp_path / "events.jsonl"
    configure_events(plain=True, json_path=str(log))
    try:
        resumed: list[str] = []
        checkpoint = Checkpoint(tmp_path / "checkpoint", resumed=resumed)
        assert checkpoint.stage("explain", lambda: "computed") == "done"
        names = [*saved, "trust-stability-cam-000000-000002"]
        values = checkpoint.stage("trust", lambda: [checkpoint.part(n, lambda: -1) for n in names])
    finally:
        close_events()
    assert values == [len(name) for name in saved] + [-1]
    assert resumed == ["explain", *saved]
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["stage"]) for r in records] == [
        ("stage_resumed", "explain"), ("parts_resumed", "trust")
    ]  # fmt: skip
    assert records[1]["parts"] == 3
    assert records[1]["kinds"] == {"trust-maps": 2, "trust-randomisation": 1}
    assert capsys.readouterr().err.splitlines() == [
        "auditor: explain read back from the checkpoint",
        "auditor: trust: 3 parts read back from the checkpoint "
        "(trust-maps 2, trust-randomisation 1)",
    ]


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


def _stopping(checkpoint: Checkpoint, computed: list[str], stop_at: int | None) -> Any:
    """``checkpoint``'s memo, interrupted (as by a kill) when it is about to compute its
    part number ``stop_at``; each part it computes is named in ``computed``."""

    def part(name: str, compute: Callable[[], Any]) -> Any:
        def counted() -> Any:
            if len(computed) == stop_at:
                raise KeyboardInterrupt
            computed.append(name)
            return compute()

        return checkpoint.part(name, counted)

    return part


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

    folder = tmp_path / "checkpoint"
    folder.mkdir()
    with pytest.raises(KeyboardInterrupt):
        evaluate(
            model, dataset, preprocessing, OutputKind.LOGITS, settings,
            memo=_stopping(Checkpoint(folder), computed, 2), chunk_images=4,
        )  # fmt: skip
    assert computed == ["evaluate-000000000", "evaluate-000000004"]
    again = evaluate(
        model, dataset, preprocessing, OutputKind.LOGITS, settings,
        memo=_stopping(Checkpoint(folder), computed, None), chunk_images=4,
    )  # fmt: skip
    assert computed[2:] == ["evaluate-000000008", "evaluate-000000012"]
    pd.testing.assert_frame_equal(again.predictions, full.predictions)
    pd.testing.assert_frame_equal(again.excluded, full.excluded)
    np.testing.assert_array_equal(again.intensities, full.intensities)
    assert repr(again.metrics) == repr(full.metrics)  # NaN != NaN, not in their repr
    assert again.data_sha256 == full.data_sha256


def test_trust_checks_stopped_mid_way_go_on_from_their_last_saved_part(
    tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    """Each case's map checks and each batch of recomputed maps is a saved part: the trust
    checks stopped after the map checks and a few recomputed batches, then resumed, compute
    only the parts not saved, and
    give the same records, verdicts, curves and example maps as an uninterrupted run."""
    model = load_model(tiny_model, torch.device("cpu"))
    dataset = discover(manifest, None)
    preprocessing = model_preprocessing(dataset, 3, None, None, None)
    predictions = evaluate(
        model, dataset, preprocessing, OutputKind.LOGITS, EvaluationSettings()
    ).predictions
    selection = select_cases(predictions, dataset.classes, 3, seed=1)
    methods = ("saliency", "grad-cam", "occlusion", "smoothgrad")
    explanations = explain_cases(
        model, dataset, preprocessing, predictions, selection, OutputKind.LOGITS,
        "features", ExplainSettings(methods=methods, smoothgrad_samples=2), batch_size=2,
    )  # fmt: skip
    height, width = preprocessing.size or (0, 0)
    layers = profile_model(model, (3, height, width), 2).layers
    settings = TrustSettings(trust_images=3, randomisation_steps=2, stability_samples=2)

    def trust(memo: Any = None) -> Trust:
        return measure_trust(
            model, dataset, preprocessing, predictions, explanations, OutputKind.LOGITS,
            settings, layers, batch_size=2, memo=memo,
        )  # fmt: skip

    full, computed = trust(), list[str]()
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    stop_at = len(explanations.cases) + 3
    with pytest.raises(KeyboardInterrupt):
        trust(_stopping(Checkpoint(folder), computed, stop_at))
    saved = sorted(p.name for p in folder.iterdir())
    assert saved == sorted(computed) and len(saved) == stop_at
    assert any(name.startswith("trust-maps-") for name in saved), saved
    assert any(name.startswith("trust-randomisation-") for name in saved), saved
    resumed: list[str] = []
    again = trust(Checkpoint(folder, resumed=resumed).part)
    assert sorted(resumed) == saved, "every saved part read back"
    later = sorted(p.name for p in folder.iterdir() if p.name not in saved)
    assert later and not set(later) & set(saved), "the rest computed, nothing twice"
    pd.testing.assert_frame_equal(again.records, full.records)
    pd.testing.assert_frame_equal(again.verdicts, full.verdicts)
    assert again.curves.keys() == full.curves.keys()
    for method, (deletion, insertion) in full.curves.items():
        np.testing.assert_array_equal(again.curves[method][0], deletion)
        np.testing.assert_array_equal(again.curves[method][1], insertion)
    assert again.example.keys() == full.example.keys()
    for key, value in full.example.items():
        np.testing.assert_array_equal(again.example[key], value)
    text = resumed_text(tuple(resumed))
    assert text.endswith(f"read back from its checkpoint: trust ({len(saved)} parts of it)")
