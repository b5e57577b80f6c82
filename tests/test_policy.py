"""The policy gate: criteria on metrics.json, policy.json, junit.xml and exit code 3."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

from auditor.config import resolve_config
from auditor.errors import ConfigError
from auditor.policy import (
    Criterion,
    evaluate_policy,
    gate_metrics,
    junit_xml,
    parse_policy,
    valid_metrics,
)
from tests.helpers import invoke, is_event, one_line_error


def test_criteria_parse_with_their_comparison_and_bad_ones_are_one_line_errors() -> None:
    criteria = parse_policy({"accuracy.ci_low": ">= 0.85", "findings.shortcuts": "==0"}, "f")

    assert criteria == (
        Criterion("accuracy.ci_low", ">=", 0.85),
        Criterion("findings.shortcuts", "==", 0.0),
    )
    with pytest.raises(ConfigError, match=r"unknown metric 'accuracy\.low'; valid metrics: ") as e:
        parse_policy({"accuracy.low": ">= 0.8"}, "f")
    assert "accuracy.ci_low" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r'write it like ">= 0.85"'):
        parse_policy({"accuracy.ci_low": "at least 0.8"}, "f")
    with pytest.raises(ConfigError, match="not a comparison"):
        parse_policy({"accuracy.ci_low": 0.8}, "f")


def test_every_number_of_metrics_json_reached_through_objects_is_a_valid_metric(
    audit: tuple[object, Path],
) -> None:
    metrics = json.loads((audit[1] / "metrics.json").read_text())
    values = gate_metrics(metrics)

    assert set(values) == set(valid_metrics())
    assert values["accuracy.ci_low"] == metrics["accuracy"]["ci_low"]
    assert (
        values["operating_point.sensitivity.value"]
        == metrics["operating_point"]["sensitivity"]["value"]
    )
    failing = sum(m["randomisation"] == "fails" for m in metrics["trust"]["methods"])
    assert values["explanations.failed_randomisation"] == failing
    assert values["findings.fragile_perturbations"] == len(metrics["robustness"]["fragile"])


def test_a_criterion_is_met_not_met_or_fails_when_not_measured() -> None:
    metrics = {"accuracy": {"value": 0.9, "ci_low": 0.84, "ci_high": 0.95}}
    criteria = (
        Criterion("accuracy.value", ">=", 0.85),
        Criterion("accuracy.ci_low", ">=", 0.85),
        Criterion("operating_point.auc.value", ">=", 0.5),
    )
    empty = {key: None for key in ("metadata_dependence", "robustness", "fairness")}
    trust = {"trust": {"methods": [], "shortcuts": None}, "positive_calibration": None}

    result = evaluate_policy(criteria, metrics | empty | trust)

    assert [o.passed for o in result.outcomes] == [True, False, False]
    assert result.outcomes[1].reason == "0.84 is not >= 0.85"
    assert result.outcomes[2].reason == "not measured in this audit"
    suite = ElementTree.fromstring(junit_xml(result, "suite")).find("testsuite")
    assert suite is not None and (suite.get("tests"), suite.get("failures")) == ("3", "2")
    failed = [c.get("name") for c in suite if c.find("failure") is not None]
    assert failed == ["accuracy.ci_low >= 0.85", "operating_point.auc.value >= 0.5"]


def test_a_column_found_at_two_true_classes_counts_once() -> None:
    def comparison(column: str, label: str, finding: bool) -> dict[str, object]:
        return {"column": column, "label": label, "finding": finding}

    dependence = {
        "judged": True,
        "columns": [
            comparison("marker", "benign", True),
            comparison("marker", "malignant", True),
            comparison("site", "benign", True),
            comparison("site", "malignant", False),
            comparison("sex", "benign", False),
        ],
    }
    metrics = {"metadata_dependence": dependence, "robustness": None, "fairness": None}
    trust = {"trust": {"methods": [], "shortcuts": None}, "positive_calibration": None}

    result = evaluate_policy((Criterion("findings.metadata_dependence", "==", 2),), metrics | trust)

    assert [o.passed for o in result.outcomes] == [True], result.outcomes


def _policy_run(tmp_path: Path, model: Path, data: Path, policy: str) -> tuple[object, Path]:
    tmp_path.mkdir(exist_ok=True)
    config = tmp_path / "audit.toml"
    config.write_text(f"robustness-images = 0\nbootstrap = 100\n[policy]\n{policy}")
    result = invoke(
        "run", "--model", str(model), "--data", str(data), "--out", str(tmp_path / "out"),
        "--config", str(config), "--explain-samples", "0", "--device", "cpu",
    )  # fmt: skip
    return result, Path(result.stdout.strip().splitlines()[-1])


def test_a_failed_criterion_exits_3_with_its_folder_written(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    result, folder = _policy_run(
        tmp_path, tiny_model, manifest, '"n_images" = ">= 10"\n"accuracy.value" = "> 1"\n'
    )

    assert result.exit_code == 3, result.output  # type: ignore[attr-defined]
    stderr = [
        line
        for line in result.stderr.strip().splitlines()  # type: ignore[attr-defined]
        if not is_event(line)
    ]
    assert stderr == [f"Policy: 1 of 2 acceptance criteria not met (see {folder / 'policy.json'})"]
    policy = json.loads((folder / "policy.json").read_text())
    assert (policy["passed"], policy["failed"], policy["exit_code"]) == (False, 1, 3)
    assert [c["passed"] for c in policy["criteria"]] == [True, False]
    metrics = json.loads((folder / "metrics.json").read_text())
    assert policy["criteria"][1]["value"] == metrics["accuracy"]["value"]
    junit = (folder / "junit.xml").read_text()
    assert 'name="accuracy.value &gt; 1"' in junit and junit.count("<failure") == 1
    html = (folder / "report.html").read_text()
    assert "Verdict: acceptance criteria not met</strong>\n    (1 of 2 fail;" in html
    assert "accuracy.value &gt; 1" in html


def test_criteria_all_met_exit_0_and_an_unknown_metric_exits_1_before_any_file(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    result, folder = _policy_run(tmp_path / "a", tiny_model, manifest, '"n_images" = ">= 10"\n')
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert json.loads((folder / "policy.json").read_text())["passed"] is True
    assert "Verdict: all 1 acceptance criteria are met" in (folder / "report.html").read_text()

    (tmp_path / "b").mkdir()
    config = tmp_path / "b" / "audit.toml"
    config.write_text('[policy]\n"accuracy.lower" = ">= 0.9"\n')
    bad = invoke("run", "--model", str(tiny_model), "--data", str(manifest), "--config",
                 str(config), "--out", str(tmp_path / "b" / "out"))  # fmt: skip
    one_line_error(bad, "[policy] names an unknown metric 'accuracy.lower'; valid metrics:")
    assert not (tmp_path / "b" / "out").exists()


def test_the_resolved_config_records_the_policy(tmp_path: Path) -> None:
    config = tmp_path / "audit.toml"
    config.write_text('model = "m.pt"\ndata = "d"\n[policy]\n"ece" = "<= 0.1"\n')

    resolved = resolve_config(config, {})

    assert resolved.policy == (Criterion("ece", "<=", 0.1),)
    assert resolved.as_dict()["policy"] == {"value": ["ece <= 0.1"], "source": "file audit.toml"}
