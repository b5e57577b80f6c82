"""The policy gate: acceptance criteria on ``metrics.json``, judged after every run.

A ``[policy]`` table in the config lists criteria, one line each: a dotted path to a
number (``"accuracy.ci_low"``) and a comparison (``">= 0.85"``), so the side of an
interval that must clear the bound is explicit. The numbers are ``metrics.json``'s
(every number reached through objects, not lists), a few counts and worst cases
derived from it (:data:`DERIVED`) and one named label's figures
(:mod:`auditor.label_criteria`), so a criterion reads exactly what the run folder holds.
A criterion whose number this audit did not measure (``null``) fails, with the reason.
The result is ``policy.json``, ``junit.xml`` (one test case per criterion, for CI
systems) and a table in the report; ``auditor run`` exits with 3 when any criterion fails.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from auditor.errors import ConfigError
from auditor.label_criteria import (
    LABEL_MEASURES,
    NAMED_LABEL_KEYS,
    label_calibration_numbers,
    label_numbers,
    lowest_of_labels,
    missing_label,
    named_label_metric,
    unnamed_label_reason,
)
from auditor.resources import resource_path

__all__ = [
    "DERIVED",
    "EXIT_POLICY_FAILED",
    "NO_PREVIOUS",
    "Criterion",
    "Outcome",
    "PolicyResult",
    "evaluate_policy",
    "gate_metrics",
    "junit_xml",
    "parse_policy",
    "policy_document",
    "valid_metrics",
]

EXIT_POLICY_FAILED = 3
"""``auditor run``'s exit code when the audit ran and a criterion failed."""

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
_COMPARISON = re.compile(r"^\s*(>=|<=|==|!=|>|<)\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")

_DISPARITIES = (
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
)

DERIVED: dict[str, str] = {
    "explanations.failed_randomisation": "methods whose maps survive randomising the model",
    "explanations.untrustworthy": "methods the report says not to read",
    "explanations.readable": "methods that can be read (randomisation and faithfulness)",
    "findings.metadata_dependence": "metadata columns the predictions depend on",
    "findings.shortcuts": "flagged shortcut findings",
    "findings.fragile_perturbations": "perturbations the model is fragile under",
    "findings.artifact_units": "units network dissection labels with an artefact concept",
    "findings.embedding_organised_by": "variables that organise the embedding beyond the class "
    "(a multi-label model: the set of labels)",
    "findings.near_duplicates": "validation pairs that are near-duplicates or byte-identical",
    "findings.leakage": "training images that nearly duplicate validation images",
    "findings.counterfactual_artifacts": "misclassified images whose call changes when an "
    "artefact concept is removed (segment counterfactuals)",
    "findings.miscalibrated_labels": "labels of a multi-label model whose calibration slope's "
    "95% CI excludes 1",
    **{
        f"fairness.{name}.{part}": f"the worst column's {name.replace('_', ' ')} ({part}; "
        "of any label, for a multi-label model)"
        for name in _DISPARITIES
        for part in ("value", "ci_low", "ci_high")
    },
    **{
        f"robustness.worst_accuracy_change.{part}": "the largest fall in accuracy "
        f"({part}; a multi-label model's subset accuracy)"
        for part in ("value", "ci_low", "ci_high")
    },
    **{
        f"positive_calibration.{name}.{part}": f"the calibration {name} ({part})"
        for name in ("slope", "intercept")
        for part in ("value", "ci_low", "ci_high")
    },
    **{
        f"multi_label.lowest_{name}.{part}": f"a multi-label model's lowest {name} of a label "
        f"({part}; the label of the lowest value)"
        for name in LABEL_MEASURES
        for part in ("value", "ci_low", "ci_high")
    },
    **{
        f"multi_label.highest_ece.{part}": f"a multi-label model's highest ECE of a label ({part}; "
        "the label of the highest value)"
        for part in ("value", "ci_low", "ci_high")
    },
}
"""Numbers derived from ``metrics.json`` that a criterion may read, with what each is."""


@dataclass(frozen=True)
class Criterion:
    """One acceptance criterion: ``metric comparison bound``."""

    metric: str
    comparison: str
    bound: float

    @property
    def text(self) -> str:
        return f"{self.metric} {self.comparison} {self.bound:g}"


@dataclass(frozen=True)
class Outcome:
    """A criterion judged: the value read (``None``: not measured), passed, why not."""

    criterion: Criterion
    value: float | None
    passed: bool
    reason: str


@dataclass(frozen=True)
class PolicyResult:
    """Every criterion judged; ``passed`` when all were met (also when none is declared)."""

    outcomes: tuple[Outcome, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)

    @property
    def failed(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.passed)


def _numbers(node: dict[str, Any], defs: dict[str, Any], path: str) -> Iterator[str]:
    """Dotted paths to every number the schema ``node`` reaches through object properties."""
    if "$ref" in node:
        node = defs[node["$ref"].rsplit("/", 1)[-1]]
    for option in node.get("oneOf", ()):
        yield from _numbers(option, defs, path)
    kinds = node.get("type", ())
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if path and ("number" in kinds or "integer" in kinds):
        yield path
    for name, child in node.get("properties", {}).items():
        yield from _numbers(child, defs, f"{path}.{name}" if path else name)


@functools.cache
def valid_metrics() -> tuple[str, ...]:
    """Every metric a criterion may name: ``metrics.json``'s numbers, :data:`DERIVED` and
    the comparison with the previous audit's (:data:`~auditor.compare.COMPARED`)."""
    from auditor.compare.comparison import COMPARED

    schema = json.loads(resource_path("schemas", "metrics.schema.json").read_text("utf-8"))
    found = set(_numbers(schema, schema.get("$defs", {}), "")) - {"schema_version"}
    return tuple(sorted(found | set(DERIVED) | set(COMPARED)))


def parse_policy(table: dict[str, Any], source: str) -> tuple[Criterion, ...]:
    """The ``[policy]`` table's criteria, in file order.

    Raises:
        ConfigError: A key that is no metric (the message lists the valid ones) or a
            value that is not a comparison with a number.
    """
    criteria = []
    valid = valid_metrics()
    for metric, text in table.items():
        if metric not in valid and named_label_metric(metric) is None:
            raise ConfigError(
                f"{source} [policy] names an unknown metric {metric!r}; valid metrics: "
                f"{', '.join(valid + NAMED_LABEL_KEYS)}"
            )
        match = _COMPARISON.match(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                f"{source} [policy] {metric!r} = {text!r} is not a comparison with a number; "
                f'write it like ">= 0.85" (one of {", ".join(_OPERATORS)})'
            )
        criteria.append(Criterion(metric, match.group(1), float(match.group(2))))
    return tuple(criteria)


def _worst_disparity(metrics: dict[str, Any], name: str) -> dict[str, Any] | None:
    """The worst column's disparity ``name``: over a multi-label model's labels too."""
    tests = [metrics["fairness"]] if metrics.get("fairness") else metrics.get("label_fairness", [])
    metric = name.replace("_", " ")
    rows = [d for f in tests for d in f["disparities"] if d["metric"] == metric]
    pick = min if name.endswith("ratio") else max
    return pick((d for d in rows if d["value"] is not None), key=lambda d: d["value"], default=None)


def _similarity_findings(similarity: dict[str, Any] | None) -> dict[str, float | None]:
    leakage = similarity["leakage"] if similarity else None
    return {
        "findings.embedding_organised_by": len(similarity["organised_by"]) if similarity else None,
        "findings.near_duplicates": similarity["near_duplicates"] if similarity else None,
        "findings.leakage": leakage["pairs"] if leakage else None,
    }


def _counterfactual_artifacts(metrics: dict[str, Any]) -> float | None:
    found = metrics.get("counterfactuals")
    if not found:
        return None
    rows = found["artifacts"]
    return sum(a["misclassified_removed"] for a in rows if a["kind"] == "segments")


def _derived(metrics: dict[str, Any]) -> dict[str, float | None]:
    trust = metrics["trust"]
    methods = trust["methods"]
    dependence = metrics.get("metadata_dependence")  # null without metadata columns; not
    # judged (nothing compared, or too few permutations to reach the level): not measured
    shortcuts = trust["shortcuts"]
    robustness = metrics.get("robustness")
    found: dict[str, float | None] = {
        "explanations.failed_randomisation": sum(m["randomisation"] == "fails" for m in methods),
        "explanations.untrustworthy": sum(m["level"] == "bad" for m in methods),
        "explanations.readable": sum(m["level"] == "good" for m in methods),
        "findings.metadata_dependence": (
            len({c["column"] for c in dependence["columns"] if c["finding"]})
            if dependence and dependence["judged"]
            else None
        ),
        "findings.shortcuts": sum(g["flagged"] for g in shortcuts["groups"]) if shortcuts else None,
        "findings.fragile_perturbations": len(robustness["fragile"]) if robustness else None,
        "findings.artifact_units": (
            metrics["dissection"]["artifact_units"] if metrics.get("dissection") else None
        ),
        **_similarity_findings(metrics.get("similarity")),
        "findings.counterfactual_artifacts": _counterfactual_artifacts(metrics),
    }
    for name in _DISPARITIES:
        worst = _worst_disparity(metrics, name)
        for part in ("value", "ci_low", "ci_high"):
            found[f"fairness.{name}.{part}"] = worst[part] if worst else None
    calibration = metrics.get("positive_calibration") or {}
    for name in ("slope", "intercept"):
        triple = calibration.get(name) or (None, None, None)
        for part, value in zip(("value", "ci_low", "ci_high"), triple, strict=True):
            found[f"positive_calibration.{name}.{part}"] = value
    found |= lowest_of_labels(metrics.get("multi_label"))
    found |= label_calibration_numbers(metrics.get("label_calibration"))
    rows = robustness["rows"] if robustness else []
    fall = min(rows, key=lambda r: r["accuracy_change"], default=None)
    for part, key in (("value", ""), ("ci_low", "_ci_low"), ("ci_high", "_ci_high")):
        found[f"robustness.worst_accuracy_change.{part}"] = (
            fall[f"accuracy_change{key}"] if fall else None
        )
    return found


def _lookup(metrics: dict[str, Any], path: str) -> float | None:
    node: Any = metrics
    for part in path.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return None
        node = node[part]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def gate_metrics(
    metrics: dict[str, Any], compared: dict[str, float | None] | None = None
) -> dict[str, float | None]:
    """Every valid metric's value in this ``metrics.json`` document and the comparison
    with the previous audit (``compared``; see :func:`auditor.compare.gate_values`);
    ``None``: not measured."""
    derived = _derived(metrics) | (compared or {})
    return (
        {
            path: derived[path] if path in derived else _lookup(metrics, path)
            for path in valid_metrics()
        }
        | label_numbers(metrics)
        | (compared or {})  # with a compared label rate's compare.label.* numbers
    )


NO_PREVIOUS = "no previous audit of this model to compare with"
"""Why a ``compare.*`` criterion passes on a model's first audit."""


def evaluate_policy(
    criteria: tuple[Criterion, ...],
    metrics: dict[str, Any],
    compared: dict[str, float | None] | str | None = None,
) -> PolicyResult:
    """Judge each criterion on the ``metrics.json`` document ``metrics`` and the comparison
    with the previous audit, ``compared``: its numbers (see
    :func:`auditor.compare.gate_values`); ``None`` when there is no previous audit (its
    criteria pass: a model's first audit has nothing to regress from); or why an earlier
    run could not be compared with (its criteria fail, with that reason)."""
    numbers = compared if isinstance(compared, dict) else None
    values = gate_metrics(metrics, numbers)
    outcomes = []
    for criterion in criteria:
        value = values.get(criterion.metric)
        if numbers is None and criterion.metric.startswith("compare."):
            why = f"not compared: {compared}" if isinstance(compared, str) else NO_PREVIOUS
            missing = named_label_metric(criterion.metric) and missing_label(
                criterion.metric, metrics
            )  # a label this audit lacks fails even with nothing to compare
            outcomes.append(Outcome(criterion, None, compared is None and not missing,
                                    missing or why))  # fmt: skip
            continue
        if value is None or math.isnan(value):
            why = "not measured in this audit"
            if named_label_metric(criterion.metric):
                why = unnamed_label_reason(criterion.metric, metrics)
            outcomes.append(Outcome(criterion, None, False, why))
            continue
        passed = _OPERATORS[criterion.comparison](value, criterion.bound)
        reason = "" if passed else f"{value:.4g} is not {criterion.comparison} {criterion.bound:g}"
        outcomes.append(Outcome(criterion, value, passed, reason))
    return PolicyResult(tuple(outcomes))


def policy_document(result: PolicyResult) -> dict[str, Any]:
    """The content of ``policy.json``."""
    return {
        "passed": result.passed,
        "declared": len(result.outcomes),
        "failed": len(result.failed),
        "exit_code": 0 if result.passed else EXIT_POLICY_FAILED,
        "criteria": [
            {
                "metric": o.criterion.metric,
                "comparison": o.criterion.comparison,
                "bound": o.criterion.bound,
                "value": o.value,
                "passed": o.passed,
                "reason": o.reason,
            }
            for o in result.outcomes
        ],
    }


def junit_xml(result: PolicyResult, name: str) -> str:
    """JUnit XML: one test suite ``name``, one test case per criterion (a failure for each
    criterion not met), as CI systems read test reports."""
    suite = ElementTree.Element(
        "testsuite",
        name=name,
        tests=str(len(result.outcomes)),
        failures=str(len(result.failed)),
        errors="0",
        skipped=str(sum(o.passed and bool(o.reason) for o in result.outcomes)),
    )
    for outcome in result.outcomes:
        case = ElementTree.SubElement(
            suite, "testcase", classname="auditor.policy", name=outcome.criterion.text
        )
        if not outcome.passed:
            failure = ElementTree.SubElement(case, "failure", message=outcome.reason)
            failure.text = f"{outcome.criterion.text}: {outcome.reason}"
        elif outcome.reason:
            ElementTree.SubElement(case, "skipped", message=outcome.reason)
    root = ElementTree.Element("testsuites")
    root.append(suite)
    ElementTree.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, "unicode") + "\n"
