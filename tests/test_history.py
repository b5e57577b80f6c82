"""The history of runs: recording, listing, missing folders, concurrent writers, the schema
upgrade from its first version, --skip-if-unchanged and the stage events."""

from __future__ import annotations

import json
import multiprocessing
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import Result

from auditor.config import resolve_config
from auditor.data import discover
from auditor.history import History, config_sha256, dataset_sha256
from auditor.history.runs import unchanged_run
from auditor.history.schema import MIGRATIONS
from auditor.history.store import history_url
from auditor.load import file_sha256
from tests.helpers import fake_run_folder, invoke, is_event, one_line_error


def _run_args(audit: tuple[Result, Path]) -> list[str]:
    """The shared audit's command line (see conftest)."""
    folder = audit[1]
    manifest = json.loads((folder / "manifest.json").read_text())
    config = manifest["config"]
    return [
        "--model", manifest["model"]["path"], "--data", manifest["data"]["source"],
        "--out", str(folder.parent), "--explain-samples", "3", "--batch-size", "4",
        "--seed", "1", "--device", "cpu", "--patient-column", config["patient_column"]["value"],
    ]  # fmt: skip


def test_a_run_is_recorded_with_its_hashes_metrics_and_policy(audit: tuple[Result, Path]) -> None:
    folder = audit[1]
    history = History(history_url(None, folder.parent) or "")
    runs = [r for r in history.runs() if r.folder == str(folder)]
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())

    assert len(runs) == 1
    run = runs[0]
    assert (run.model_name, run.model_version) == ("tiny", "")
    assert (
        run.model_sha256
        == manifest["model"]["sha256"]
        == file_sha256(Path(manifest["model"]["path"]))
    )
    assert run.data_sha256 == manifest["data"]["sha256"]
    assert run.config_sha256 == config_sha256(manifest["config"], manifest["auditor_version"])
    assert run.manifest_sha256 == file_sha256(folder / "manifest.json")
    assert (run.started, run.finished) == (manifest["started"], manifest["finished"])
    accuracy = metrics["accuracy"]
    assert run.metrics["accuracy"] == (accuracy["value"], accuracy["ci_low"], accuracy["ci_high"])
    assert run.metrics["ece"] == (metrics["ece"], None, None)
    assert run.policy_passed and run.n_images == metrics["n_images"]
    assert not run.missing and run.host


def test_the_data_hash_is_known_before_the_run(audit: tuple[Result, Path]) -> None:
    args = _run_args(audit)
    config = resolve_config(None, {"model": Path(args[1]), "data": Path(args[3])})
    manifest = json.loads((audit[1] / "manifest.json").read_text())
    assert dataset_sha256(discover(config.data)) == manifest["data"]["sha256"]


def test_skip_if_unchanged_runs_nothing_and_prints_the_earlier_folder(
    audit: tuple[Result, Path],
) -> None:
    folder = audit[1]
    before = sorted(folder.parent.iterdir())

    same = invoke("run", *_run_args(audit), "--skip-if-unchanged")

    assert same.exit_code == 0, same.output
    assert same.stdout.strip().splitlines()[-1] == str(folder)
    assert "Unchanged: run " in same.stderr and "no new run" in same.stderr
    assert sorted(folder.parent.iterdir()) == before


def test_another_seed_is_not_the_same_audit(audit: tuple[Result, Path]) -> None:
    args = _run_args(audit)
    flags = {"model": Path(args[1]), "data": Path(args[3]), "out": audit[1].parent}
    same = {**flags, "explain_samples": 3, "batch_size": 4, "seed": 1, "device": "cpu"}
    same["patient_column"] = "patient"

    found = unchanged_run(resolve_config(None, same))
    other = unchanged_run(resolve_config(None, {**same, "seed": 2}))

    assert found is not None and found.folder == str(audit[1])
    assert other is None


def test_history_lists_runs_as_text_and_json_and_flags_a_deleted_folder(
    audit: tuple[Result, Path], tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(audit[1], copy)
    later = fake_run_folder(tmp_path, "later", started="2099-01-01T00:00:00+00:00")
    database = tmp_path / "h.sqlite"
    added = invoke("history", "--history", str(database), "--add", str(copy))
    invoke("history", "--history", str(database), "--add", str(later))
    again = invoke("history", "--history", str(database), "--add", str(audit[1]))
    shutil.rmtree(copy)

    listed = invoke("history", "--history", str(database), "--json")
    text = invoke("history", "--history", str(database))

    assert added.exit_code == 0, added.output
    runs = json.loads(listed.stdout)
    assert [r["missing"] for r in runs] == [True, False], "the original is the copy's run"
    assert again.exit_code == 0 and len(runs) == 2
    assert runs[0]["metrics"]["accuracy"]["value"] is not None
    lines = text.stdout.splitlines()
    assert lines[0].split()[:3] == ["id", "model", "version"]
    assert f"missing: {copy}" in lines[1] and "missing" not in lines[2]
    assert (tmp_path / "history.html").is_file()


def test_history_errors_are_one_line(tmp_path: Path) -> None:
    one_line_error(invoke("history", "--out", str(tmp_path)), "no history at")
    one_line_error(invoke("history", "--history", "nosuchdb://host/x"), "dialect is not installed")


def _record_many(args: tuple[str, list[str]]) -> list[int]:
    url, folders = args
    history = History(url)
    return [history.record(Path(folder)).id for folder in folders]


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Eight processes open a new database at once (each applies the migrations if it can)
    and record five runs each, the last of them a run another process records too (one
    row per run)."""
    folders = [
        str(fake_run_folder(tmp_path, f"run{k}", started=f"2026-01-01T00:{k:02d}:00+00:00"))
        for k in range(36)
    ]
    shared = folders[:4]
    chunks = [[*folders[4 + 4 * p : 8 + 4 * p], shared[p % 4]] for p in range(8)]
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    context = multiprocessing.get_context("spawn")
    with context.Pool(8) as pool:
        ids = pool.map(_record_many, [(url, chunk) for chunk in chunks])

    history = History(url)
    runs = history.runs()
    assert len(runs) == 36 and {r.folder for r in runs} == set(folders)
    assert sorted({i for chunk in ids for i in chunk}) == list(range(1, 37))
    assert history.version == MIGRATIONS[-1][0]


def test_recording_a_run_twice_keeps_one_row(audit: tuple[Result, Path], tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")

    first, again = history.record(audit[1]), history.record(audit[1])

    assert first.id == again.id and len(history.runs()) == 1


def test_the_previous_run_is_the_latest_whose_folder_is_here(tmp_path: Path) -> None:
    history = History(f"sqlite:///{tmp_path / 'h.sqlite'}")
    for k in range(3):
        history.record(fake_run_folder(tmp_path, f"r{k}", started=f"2026-01-0{k + 1}T00:00Z"))
    shutil.rmtree(tmp_path / "r2")

    run, note = history.previous("tiny", "2026-02-01")
    assert run is not None and Path(run.folder).name == "r1" and note == ""
    shutil.rmtree(tmp_path / "r1")
    shutil.rmtree(tmp_path / "r0")
    run, note = history.previous("tiny", "2026-02-01")
    assert run is None and "The folders of the 3 earlier run(s) of 'tiny'" in note
    assert history.previous("other", "2026-02-01") == (None, "")


def test_a_first_version_database_is_upgraded_and_keeps_its_runs(
    audit: tuple[Result, Path], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    old = History(url)
    with old.engine.begin() as connection:  # roll the new database back to version 1 by hand
        connection.execute(sa.text("DROP INDEX runs_identity"))
        connection.execute(sa.text("ALTER TABLE runs DROP COLUMN host"))
        connection.execute(sa.text("DELETE FROM auditor_schema WHERE version > 1"))
        connection.execute(
            sa.text(
                "INSERT INTO runs (model_name, model_version, model_sha256, data_sha256, "
                "config_sha256, started, finished, n_images, policy_passed, policy_failed, "
                "policy_declared, folder, manifest_sha256, auditor_version, recorded) VALUES "
                "('old', '1', 'a', 'b', 'c', '2026-01-01', '2026-01-01', 10, 1, 0, 0, "
                "'/gone', 'd', '0.1.0', '2026-01-01')"
            )
        )
    assert old.version == 1

    upgraded = History(url)
    upgraded.record(audit[1])

    assert upgraded.version == MIGRATIONS[-1][0]
    first, second = upgraded.runs()
    assert (first.model_name, first.host, first.missing) == ("old", None, True)
    assert second.host and not second.missing


def test_stage_events_are_logged_as_lines_and_json(audit: tuple[Result, Path]) -> None:
    """The shared audit ran under CliRunner (stderr is not a terminal) with --log-json."""
    result, folder = audit
    events = [line for line in result.stderr.splitlines() if is_event(line)]
    stages = [line.split()[1] for line in events if line.split()[2] == "started"]
    assert stages[0] == "run" and stages[1:3] == ["load", "evaluate"]
    for name in stages:
        assert sum(line.startswith(f"auditor: {name} finished in ") for line in events) == 1
    records = [
        json.loads(line)
        for line in (folder.parent.parent / "events.jsonl").read_text().splitlines()
    ]
    kinds = [(r["event"], r["stage"]) for r in records]
    assert kinds[0] == ("run_start", None) and kinds[-1] == ("run_end", None)
    ends = {r["stage"]: r for r in records if r["event"] == "stage_end"}
    assert [s for e, s in kinds if e == "stage_start"] == list(ends) == stages[1:]
    predictions = (folder / "predictions.csv").read_text().splitlines()
    assert ends["evaluate"]["counts"]["images"] == len(predictions) - 1
    assert all(r["seconds"] >= 0 for r in ends.values())
    assert records[-1]["counts"]["folder"] == str(folder)


@pytest.mark.parametrize("where", ["-", None])
def test_history_can_be_turned_off_or_defaults_beside_the_runs(
    where: str | None, tmp_path: Path
) -> None:
    url = history_url(where, tmp_path)
    assert url == (None if where == "-" else f"sqlite:///{tmp_path / 'history.sqlite'}")


def test_a_failed_run_logs_its_error_as_json_and_one_error_line(
    tmp_path: Path, manifest: Path
) -> None:
    model = tmp_path / "broken.pt"
    model.write_bytes(b"not a model")
    log = tmp_path / "log.jsonl"

    result = invoke(
        "run", "--model", str(model), "--data", str(manifest), "--out", str(tmp_path / "r"),
        "--log-json", str(log),
    )  # fmt: skip

    one_line_error(result, "broken.pt")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(r["event"], r["stage"]) for r in records] == [
        ("run_start", None), ("stage_start", "load"), ("run_failed", None),
    ]  # fmt: skip
    assert records[-1]["error"] in result.stderr
    assert not (tmp_path / "r" / "history.sqlite").exists()
