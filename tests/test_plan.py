"""The run's pass plan: printed before the first stage, an upper bound of what each stage
then took, and shown in the report beside each stage's time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from click.testing import Result

from auditor.measure.budget import BACKWARD_COST


def _events(audit: tuple[Result, Path]) -> list[dict[str, Any]]:
    folder = audit[1]
    lines = (folder.parent.parent / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _planned(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["stage"]: e for e in events if e["event"] == "plan" and e["stage"]}


def _units(event: dict[str, Any]) -> int:
    return int(event["forward"]) + BACKWARD_COST * int(event["backward"])


def test_the_plan_is_announced_before_the_first_stage_that_runs_the_model(
    audit: tuple[Result, Path],
) -> None:
    events = _events(audit)
    kinds = [(e["event"], e["stage"]) for e in events]
    first_plan = kinds.index(("plan", "evaluate"))
    assert first_plan < kinds.index(("stage_start", "evaluate"))
    planned = _planned(events)
    assert list(planned) == [
        "evaluate", "robustness", "concepts", "explain", "trust", "counterfactuals"
    ]  # fmt: skip
    whole = [e for e in events if e["event"] == "plan" and e["stage"] is None]
    assert len(whole) == 1 and whole[0]["text"].endswith("ms per image for a forward pass")
    total = sum(e["estimated_seconds"] for e in planned.values())
    assert abs(whole[0]["estimated_seconds"] - total) < 0.01


def test_each_stage_took_no_more_passes_than_planned(audit: tuple[Result, Path]) -> None:
    folder = audit[1]
    planned = _planned(_events(audit))
    metrics = json.loads((folder / "metrics.json").read_text())
    listed = metrics["n_images"] + metrics["n_excluded"]
    assert planned["evaluate"]["forward"] == listed and not planned["evaluate"]["at_most"]
    ends = {e["stage"]: e for e in _events(audit) if e["event"] == "stage_end"}
    perturbed = ends["robustness"]["counts"]["perturbed_predictions"]
    variants = perturbed // metrics["n_images"]
    assert perturbed <= planned["robustness"]["forward"]
    assert planned["robustness"]["forward"] - perturbed <= metrics["n_excluded"] * variants
    plan = metrics["trust"]["plan"]
    assert planned["explain"]["at_most"] and plan["explain_passes"] <= _units(planned["explain"])
    assert planned["trust"]["at_most"] and plan["trust_passes"] <= _units(planned["trust"])
    searches = pd.read_csv(folder / "counterfactuals.csv")
    segments = searches[searches["kind"] == "segments"]
    gradient = searches[searches["kind"] == "gradient"]
    assert segments["passes"].sum() <= planned["counterfactuals"]["forward"]
    assert gradient["steps"].sum() <= planned["counterfactuals"]["backward"]


def test_the_report_shows_the_plan_beside_each_stage_s_time(audit: tuple[Result, Path]) -> None:
    html = (audit[1] / "report.html").read_text()
    section = html[html.index("Cost of this audit") :]
    section = section[: section.index("</table>")]
    for stage in ("evaluate", "robustness", "concepts", "explain", "trust", "counterfactuals"):
        assert f"<td>{stage}</td>" in section
    assert "at most" in section and "nan" not in section.lower()
    plan = json.loads((audit[1] / "metrics.json").read_text())["trust"]["plan"]
    assert f"The trust checks were planned at {plan['trust_passes']:,} forward-pass units" in html
