"""Network dissection in the shared audit: dissection.csv, metrics.json and the report
agree, and each unit's label is its best concept when that IoU reaches dissection-iou."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import Result

from auditor.concepts.settings import ConceptSettings


def test_the_labels_follow_the_ious_and_metrics_json_counts_them(
    audit: tuple[Result, Path],
) -> None:
    _, folder = audit
    frame = pd.read_csv(folder / "dissection.csv")
    metrics = json.loads((folder / "metrics.json").read_text())["dissection"]
    minimum = ConceptSettings().dissection_iou
    assert [c["name"] for c in metrics["concepts"]] == ["dark", "bright", "border"]
    assert metrics["images"] == len(pd.read_csv(folder / "predictions.csv"))
    for layer in metrics["layers"]:
        rows = frame[frame["layer"] == layer["layer"]]
        assert rows["unit"].nunique() == layer["units"]
        best = rows.loc[rows.groupby("unit")["iou"].idxmax()]
        expected = best[best["iou"] >= minimum]
        labelled = rows[rows["label"]]
        assert sorted(zip(labelled["unit"], labelled["concept"], strict=True)) == sorted(
            zip(expected["unit"], expected["concept"], strict=True)
        )
        counts = labelled["concept"].value_counts().to_dict()
        assert {k: v for k, v in layer["labelled"].items() if v} == counts
        assert (rows.groupby("unit")["threshold"].nunique() == 1).all()
    html = (folder / "report.html").read_text()
    assert '<section id="dissection">' in html and "dissection.csv" in html
