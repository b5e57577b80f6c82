"""Sharded audits (auditor.distributed): torchrun's processes share the evaluation, the
explanations and the trust checks, and rank 0's run folder holds one process's results
(tests/conftest.py's shared audit, same model, data and flags), byte for byte."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch.multiprocessing
from click.testing import Result

from auditor.distributed import join_world, leave_world, sharded, share
from auditor.errors import ConfigError
from tests.helpers import assert_close_results, assert_same_results, invoke, one_line_error
from tests.labels import LABEL_FLAGS

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class _Cascade:
    """A generator that changes what it yields in place, as the randomisation cascade does."""

    def __init__(self) -> None:
        self.value = 0

    def steps(self, n: int) -> Iterator[_Cascade]:
        for step in range(n):
            self.value += step
            yield self


def _unit_fails(unit: int) -> int:
    if unit == 3:  # rank 1's unit
        raise ConfigError("unit 3 cannot run; fix it")
    return unit


def _rank(rank: int, port: int, out: Path) -> None:
    """One of two gloo processes: what sharded() and share() return on it."""
    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    world = join_world("cpu")
    computed: list[int] = []

    def square(unit: int) -> int:
        computed.append(unit)
        assert sharded([unit], lambda u: u) == [unit]  # inside a unit: not shared again
        return unit * unit

    cascade = _Cascade()
    seen = sharded(cascade.steps(5), lambda state: state.value)
    try:
        sharded(range(6), _unit_fails)
        failure = ""
    except ConfigError as error:
        failure = str(error)
    record = {
        "world": [world.rank, world.size, world.backend],
        "squares": sharded(range(7), square),
        "computed": computed,
        "cascade": seen,
        "failure": failure,
        "shared": share(f"rank {rank}"),
    }
    leave_world()
    (out / f"{rank}.json").write_text(json.dumps(record))


def test_two_gloo_processes_share_the_units_and_each_gets_every_result(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_rank, args=(_free_port(), tmp_path), nprocs=2)
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(ranks):
        assert record["world"] == [rank, 2, "gloo"]
        assert record["squares"] == [0, 1, 4, 9, 16, 25, 36]
        assert record["cascade"] == [0, 1, 3, 6, 10]  # each rank stepped the cascade in turn
        assert record["failure"] == "unit 3 cannot run; fix it"  # raised on rank 1 only
        assert record["shared"] == "rank 0"
    assert ranks[0]["computed"] == [0, 2, 4, 6] and ranks[1]["computed"] == [1, 3, 5]


def _events(path: Path) -> list[dict]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.endswith("}")]


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it, as a scheduler's time limit does
    (torchrun starts each rank in a session of its own)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while listed
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    tree, grew = {pid}, True
    while grew:
        below = {child for child, parent in parents.items() if parent in tree}
        grew = not below <= tree
        tree |= below
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _killed_when(command: list[str], reached: Callable[[], bool], what: str) -> None:
    """Start the sharded run; kill torchrun and both ranks once ``reached()``."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if reached():
            _kill_tree(process.pid)
            process.wait()
            return
        if process.poll() is not None:
            pytest.fail(f"the sharded run ended before it was killed: {process.stderr.read()}")
        time.sleep(0.05)
    _kill_tree(process.pid)
    pytest.fail(f"the sharded run did not reach {what} within 300 s")


def test_a_sharded_run_killed_and_resumed_writes_the_single_process_results(
    audit: tuple[Result, Path], tmp_path: Path, tiny_model: Path, manifest: Path
) -> None:
    out, events = tmp_path / "out", tmp_path / "events.jsonl"
    command = [
        *TORCHRUN, "-m", "auditor", "run", "--model", str(tiny_model), "--data", str(manifest),
        "--out", str(out), "--explain-samples", "3", "--batch-size", "4", "--seed", "1",
        "--device", "cpu", "--patient-column", "patient", "--history", "-",
        "--log-json", str(events),
    ]  # fmt: skip
    _killed_when(
        command,
        lambda: any(e["event"] == "stage_end" and e["stage"] == "explain" for e in _events(events)),
        "the end of the explain stage",
    )
    (partial,) = list(out.iterdir())
    checkpoint = partial / "checkpoint"
    chunks = sorted(p.name for p in checkpoint.glob("evaluate-*"))  # a batch each, both ranks'
    assert chunks == [f"evaluate-{start:09d}-of2" for start in (0, 4, 8, 12)]
    explained = sorted(p.name for p in checkpoint.glob("explain-*"))
    spans = ("000000-000004", "000004-000008", "000008-000010")
    assert explained == [f"explain-{span}-of2" for span in spans]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    resumed = [e["stage"] for e in _events(events) if e["event"] == "stage_resumed"]
    assert resumed == ["evaluate", "robustness", "concepts", "explain"]
    ends = [e["stage"] for e in _events(events) if e["event"] == "stage_end"]
    assert ends.count("trust") == 1  # rank 0's events only
    (folder,) = list(out.iterdir())
    assert folder == Path(done.stdout.strip().splitlines()[-1])
    assert_same_results(audit[1], folder)
    report = (folder / "report.html").read_text(encoding="utf-8")
    shared = (
        "evaluation, explanations and trust checks shared by 2 processes (gloo) of 1 thread each"
    )
    assert shared in report


def test_a_sharded_multi_label_run_killed_mid_trust_resumes_to_one_processs_results(
    label_audit: Path, label_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """The multi-label audit (tests/labels.py) on two gloo processes, killed in the middle
    of the trust checks once both ranks saved parts of them, then run again: the folder
    equals the one-process audit's: the same predictions and metrics, byte for byte, and
    maps within 1e-5 of their largest value (each rank computes its share in smaller
    batches, with one thread)."""
    (model, manifest), out, events = label_data, tmp_path / "out", tmp_path / "events.jsonl"
    command = [
        *TORCHRUN, "-m", "auditor", "run", "--model", str(model), "--data", str(manifest),
        "--out", str(out), *LABEL_FLAGS, "--history", "-", "--log-json", str(events),
    ]  # fmt: skip

    def ranks_saved() -> set[int]:
        """The ranks that saved a case of the trust checks (case n is rank n % 2's)."""
        saved = out.glob(".*.partial/checkpoint/trust-maps-*-of2")
        return {int(p.name.split("-")[2]) % 2 for p in saved}

    _killed_when(command, lambda: ranks_saved() == {0, 1}, "a saved trust case on each rank")
    (partial,) = list(out.iterdir())
    assert not (partial / "checkpoint" / "trust").exists(), "killed before the stage ended"
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    (folder,) = list(out.iterdir())
    assert folder == Path(done.stdout.strip().splitlines()[-1])
    resumed = [e["stage"] for e in _events(events) if e["event"] == "stage_resumed"]
    assert "trust" not in resumed, "the stage itself was not finished"
    (parts,) = [e for e in _events(events) if e["event"] == "parts_resumed"]
    assert parts["stage"] == "trust"
    assert parts["kinds"]["trust-maps"] > 0, "rank 0's saved cases"
    assert_close_results(label_audit, folder, exact=("predictions.csv",))
    one, two = (json.loads((f / "metrics.json").read_text()) for f in (label_audit, folder))
    assert one["multi_label"] == two["multi_label"], "the evaluation's figures: exact"


def test_a_world_without_torchruns_environment_is_a_one_line_error(
    tmp_path: Path, tiny_model: Path, manifest: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    flags = ["--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path)]
    one_line_error(invoke("run", *flags), "RANK is not set", "torchrun --nproc-per-node N")
    one_line_error(invoke("demo", "--out", str(tmp_path)), "runs in one process")
    monkeypatch.setenv("RANK", "0")
    for name, value in (("LOCAL_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "1")):
        monkeypatch.setenv(name, value)
    named = invoke("run", *flags, "--device", "cuda:1")  # before any CUDA call: on any machine
    one_line_error(named, "names one GPU", "pass --device cuda")
    assert not list(tmp_path.iterdir())
