"""Failure modes of a multi-label model (auditor.multilabel.failures): every count
against a recount of the cells, the confidence cut's edges, the order of the list, and
the known errors of the audit with a known answer (tests.labels) as recomputed from its
``predictions.csv``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from auditor.aggregate.label_failures import label_failures_sentence
from auditor.clinical.groups import metadata_groups
from auditor.multilabel.failures import ConfidentCall, label_failures
from tests.labels import LABELS

NAMES = ("a", "b")


def _has(cells: pd.Series, name: str) -> np.ndarray:
    return cells.astype(str).str.split(";").map(lambda c: name in c).to_numpy(dtype=bool)


def _frame() -> pd.DataFrame:
    """Six images, a threshold of 0.5 and a cut of 0.75 whose edges are exact in float:
    x0 misses a at p = 0.25 (confident), x1 misses a at 0.3, x2 calls b at 0.75 without it
    (confident), x3 calls b at 0.7, x4 misses a at 0.1 and calls b at 0.9 (both confident)."""
    return pd.DataFrame(
        {
            "path": [f"x{i}.png" for i in range(6)],
            "label": ["a", "a", "-", "-", "a", "a;b"],
            "prediction": ["-", "-", "b", "b", "b", "a;b"],
            "p_a": [0.25, 0.3, 0.2, 0.2, 0.1, 0.9],
            "p_b": [0.1, 0.2, 0.75, 0.7, 0.9, 0.8],
            "site": ["A", "B", "A", "B", "A", "B"],
        }
    )


def test_counts_the_confident_calls_at_the_cut_s_edges_and_lists_misses_first() -> None:
    frame = _frame()
    grouping = metadata_groups(frame, ("site",), 20)
    failures = label_failures(frame, grouping, NAMES, 0.75)

    a, b = failures.by_label
    assert (a.positives, a.missed, a.false, a.confident_missed, a.confident_false) == (
        4, 3, 0, 2, 0
    )  # fmt: skip
    assert (b.positives, b.missed, b.false, b.confident_missed, b.confident_false) == (
        1, 0, 3, 0, 2
    )  # fmt: skip
    assert failures.confident == (
        ConfidentCall("x4.png", "a", True, 0.1, 0.9),
        ConfidentCall("x0.png", "a", True, 0.25, 0.75),
        ConfidentCall("x4.png", "b", False, 0.9, 0.9),
        ConfidentCall("x2.png", "b", False, 0.75, 0.75),
    )
    assert failures.n_missed == 2
    by_value = {
        (v.column, v.value): (v.n, v.wrong_images, v.wrong_calls) for v in failures.by_value
    }
    assert by_value == {("site", "A"): (3, 3, 4), ("site", "B"): (3, 2, 2)}
    assert label_failures_sentence(failures) == (
        "4 label call(s) were wrong with confidence 75% or more: 2 missed a label the image has "
        "(probability at most 0.25), 2 called a label it does not have (at least 0.75); by label: "
        "a 2, b 2."
    )


def test_no_confident_call_is_said_with_the_cut() -> None:
    frame = _frame()
    failures = label_failures(frame, metadata_groups(frame, (), 20), NAMES, 0.95)

    assert not failures.confident and not failures.by_value
    assert sum(r.missed + r.false for r in failures.by_label) == 6
    assert label_failures_sentence(failures) == (
        "No label call was wrong with confidence 95% or more (a false call with probability at "
        "least 0.95, a miss at most 0.05)."
    )


def test_the_audit_lists_its_known_errors_as_recomputed(label_audit: Path) -> None:
    predictions = pd.read_csv(label_audit / "predictions.csv", keep_default_na=False)
    found = json.loads((label_audit / "metrics.json").read_text())["label_failures"]
    cut = found["cut"]

    recounted = []
    for name in LABELS:
        has, called = _has(predictions["label"], name), _has(predictions["prediction"], name)
        p = predictions[f"p_{name}"].to_numpy()
        missed, false = has & ~called, called & ~has
        recounted.append(
            {"label": name, "positives": int(has.sum()), "missed": int(missed.sum()),
             "false": int(false.sum()), "confident_missed": int((missed & (p <= 1 - cut)).sum()),
             "confident_false": int((false & (p >= cut)).sum())}
        )  # fmt: skip
    assert found["by_label"] == recounted
    assert sum(r["confident_missed"] for r in recounted) > 0, "the manifest's wrong rows"
    listed = {(c["path"], c["label"], c["missed"]) for c in found["confident"]}
    assert (
        len(listed)
        == len(found["confident"])
        == sum(r["confident_missed"] + r["confident_false"] for r in recounted)
    )

    html = (label_audit / "report.html").read_text()
    page_one = html[html.index('id="label-summary"') : html.index('id="contents"')]
    n, missed = len(found["confident"]), sum(c["missed"] for c in found["confident"])
    assert f"{n} label call(s) were wrong with confidence 90% or more: {missed} missed" in page_one
    detail = html[html.index('id="label-failures-detail"') :]
    for path, _, _ in listed:
        assert path in detail


def test_the_sentence_names_three_labels_and_counts_the_rest() -> None:
    names = ("a", "b", "c", "d")
    frame = pd.DataFrame(
        {"path": ["x0.png", "x1.png"], "label": ["-", "-"], "prediction": ["a;b;c;d", "d"]}
        | {f"p_{n}": [0.99, 0.99 if n == "d" else 0.1] for n in names}
    )
    failures = label_failures(frame, metadata_groups(frame, (), 20), names, 0.9)

    assert label_failures_sentence(failures).endswith(
        "; by label: d 2, a 1, b 1 and 1 more label(s)."
    )
