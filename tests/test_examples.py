"""The scheduler recipes in examples/scheduled: each parses as its tool reads it, runs the
same command, and that command audits the demo model: the first run audits and fails on
the recipe's policy (exit 3), every later one finds the run unchanged and exits the same
way without a new run."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from auditor.resources import resource_path
from auditor.synthetic import write_dataset

RECIPES = Path(__file__).parent.parent / "examples" / "scheduled"
COMMAND = "auditor run --config audit.toml --skip-if-unchanged --log-json audit-log.jsonl"


def _cron_command() -> str:
    lines = [
        line for line in (RECIPES / "crontab").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]  # fmt: skip
    assert len(lines) == 1
    fields = lines[0].split(maxsplit=5)
    assert all(f.replace("*", "").replace("/", "").isdigit() or f == "*" for f in fields[:5])
    return fields[5]


def _systemd_command() -> str:
    service, timer = configparser.ConfigParser(), configparser.ConfigParser()
    service.read(RECIPES / "auditor-audit.service")
    timer.read(RECIPES / "auditor-audit.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert timer["Timer"]["OnCalendar"] and timer["Install"]["WantedBy"] == "timers.target"
    return service["Service"]["ExecStart"]


def _github_command() -> str:
    workflow = yaml.safe_load((RECIPES / "github-actions.yml").read_text())
    assert workflow[True]["schedule"][0]["cron"]  # YAML 1.1 reads the key "on" as True
    steps = workflow["jobs"]["audit"]["steps"]
    kept = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert kept and kept[0]["if"] == "always()" and "reports/" in kept[0]["with"]["path"]
    saved = [s for s in steps if s.get("uses", "").startswith("actions/cache/save")]
    assert saved and saved[0]["if"] == "always()"
    (audit,) = [s["run"] for s in steps if s.get("name") == "Audit"]
    return str(audit)


def _gitlab_command() -> str:
    job = yaml.safe_load((RECIPES / "gitlab-ci.yml").read_text())["audit"]
    assert job["rules"][0]["if"] == '$CI_PIPELINE_SOURCE == "schedule"'
    assert job["artifacts"]["when"] == "always" and "reports/" in job["artifacts"]["paths"]
    (audit,) = job["script"]
    return str(audit)


RECIPE_COMMANDS = {
    "cron": _cron_command,
    "systemd": _systemd_command,
    "github": _github_command,
    "gitlab": _gitlab_command,
}


def _auditor_words(line: str) -> list[str]:
    """The ``auditor …`` command of a shell line, without what comes before (``cd … &&``,
    the executable's folder) or after it (redirections)."""
    words = shlex.split(line)
    start = next(k for k, w in enumerate(words) if Path(w).name == "auditor")
    stops = {">>", ">", "2>&1", "&&", "||", "|", ";"}
    end = next((k for k in range(start, len(words)) if words[k] in stops), len(words))
    return ["auditor", *words[start + 1 : end]]


@pytest.mark.parametrize("recipe", RECIPE_COMMANDS)
def test_each_recipe_parses_and_runs_the_scheduled_command(recipe: str) -> None:
    line = RECIPE_COMMANDS[recipe]()
    assert shlex.join(_auditor_words(line)) == COMMAND, line


def test_the_recipes_command_audits_the_demo_then_skips(tmp_path: Path) -> None:
    """Every recipe's command, in turn, in a folder laid out as audit.toml expects."""
    shutil.copy(RECIPES / "audit.toml", tmp_path / "audit.toml")
    (tmp_path / "models").mkdir()
    shutil.copy(
        resource_path("sample_models", "sample_cnn.pt"), tmp_path / "models" / "classifier.pt"
    )
    write_dataset(tmp_path / "data", "val", 48, seed=3)
    auditor = Path(sys.executable).parent / "auditor"
    runs = []
    for recipe, command_of in RECIPE_COMMANDS.items():
        words = _auditor_words(command_of())
        done = subprocess.run(
            [str(auditor), *words[1:]], cwd=tmp_path, capture_output=True, text=True,
            timeout=900, check=False,
        )  # fmt: skip
        runs.append((recipe, done))

    first, *later = runs
    assert first[1].returncode == 3, first[1].stderr[-3000:]  # the demo model fails the policy
    folder = Path(first[1].stdout.strip().splitlines()[-1])
    assert (tmp_path / folder / "report.pdf").is_file()
    for recipe, done in later:
        assert done.returncode == 3, (recipe, done.stderr[-2000:])
        assert "Unchanged: run 1 " in done.stderr, recipe
        assert done.stdout.strip().splitlines()[-1] == str((tmp_path / folder).absolute())
    assert len([p for p in (tmp_path / "reports").iterdir() if p.is_dir()]) == 1
    log = (tmp_path / "audit-log.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in log]
    ends = [e for e in events if e["event"] == "run_end"]
    assert events[0]["event"] == "run_start" and len(ends) == 1
    assert ends[0]["counts"]["policy"] == "failed"
    skipped = events[-len(later) :]
    assert [e["event"] for e in skipped] == ["run_skipped"] * len(later)
    assert all(e["history_run"] == 1 for e in skipped)
