"""A model with many classes: the report lists the weakest classes and the most frequent
confusions instead of every class, the confusion matrix is stored sparse, and no table
cell holds unbounded text (issue 10, item 5)."""

from __future__ import annotations

import html
import json
import re
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from auditor.aggregate.performance import top_confusions, worst_classes
from auditor.metrics import ClassMetrics, Confusion
from auditor.report.format import LONG_TEXT
from tests.helpers import TinyNet, invoke, save_torchscript, write_png

N_CLASSES = 300
REPORT_CLASSES = 20  # the default of report-classes
NAMES = tuple(f"class-{k:03d}" for k in range(N_CLASSES))


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One audit of a 300-class model on 12 images of 3 classes, the class names given on
    the command line (a command of about 3,000 characters)."""
    root = tmp_path_factory.mktemp("many")
    torch.manual_seed(0)
    model = save_torchscript(TinyNet(outputs=N_CLASSES), root / "many.pt")
    for k in range(3):
        for i in range(4):
            write_png(root / "data" / NAMES[k] / f"{i}.png", seed=10 * k + i)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)
        result = invoke(
            "run",
            "--model", str(model),
            "--data", str(root / "data"),
            "--out", str(root / "out"),
            "--classes", ",".join(NAMES),
            "--methods", "saliency",
            "--explain-samples", "2",
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    return Path(result.stdout.splitlines()[-1])


def _table_after(page: str, heading: str) -> list[list[str]]:
    """The text of each data row of the first table after ``<h3>heading</h3>``."""
    table = page.split(f"<h3>{heading}</h3>", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S) for row in rows]
    return [[html.unescape(c) for c in row] for row in cells if row]


def test_metrics_json_keeps_every_class_and_the_sparse_matrix(many: Path) -> None:
    metrics = json.loads((many / "metrics.json").read_text())
    predictions = pd.read_csv(many / "predictions.csv", keep_default_na=False)

    assert [c["class"] for c in metrics["per_class"]] == list(NAMES)
    cells = predictions.groupby(["label", "prediction"]).size()
    assert {(c["true"], c["predicted"]): c["images"] for c in metrics["confusion"]} == {
        pair: int(n) for pair, n in cells.items()
    }
    assert len(metrics["confusion"]) <= len(predictions) == 12
    assert [c for c in predictions.columns if c.startswith("p_")] == [f"p_{n}" for n in NAMES]


def test_the_report_lists_the_most_frequent_confusions_recomputed_from_predictions(
    many: Path,
) -> None:
    page = (many / "report.html").read_text()
    predictions = pd.read_csv(many / "predictions.csv", keep_default_na=False)
    errors = predictions[predictions["label"] != predictions["prediction"]]
    counts = errors.groupby(["label", "prediction"]).size().reset_index(name="images")
    counts["order"] = [(-n, NAMES.index(t), NAMES.index(p)) for t, p, n in counts.to_numpy()]
    expected = [
        [t, p, str(n), f"{n / (predictions['label'] == t).sum():.1%}"]
        for t, p, n, _ in sorted(counts.to_numpy().tolist(), key=lambda row: row[3])
    ][:REPORT_CLASSES]

    assert expected, "the random 300-class model confuses classes"
    assert "<h3>Confusion matrix</h3>" not in page
    assert _table_after(page, "Most frequent confusions") == expected
    assert "The model has 300 classes, 3 of them with images here." in page
    classes = _table_after(page, "Classes")
    assert [row[1] for row in classes] == list(NAMES[:3]), "classes without images not listed"


def test_the_report_lists_the_weakest_classes_not_all_of_them(many: Path) -> None:
    page = (many / "report.html").read_text()
    metrics = json.loads((many / "metrics.json").read_text())

    rows = _table_after(page, "Weakest classes")
    with_images = {c["class"] for c in metrics["per_class"] if c["support"] > 0}
    assert [row[0] for row in rows] and {row[0] for row in rows} <= with_images
    assert "<h3>Per class</h3>" not in page


def test_no_table_cell_holds_unbounded_text(many: Path) -> None:
    page = (many / "report.html").read_text()
    manifest = json.loads((many / "manifest.json").read_text())

    longest = max(
        len(html.unescape(re.sub(r"<[^>]+>", "", cell)))
        for cell in re.findall(r"<td[^>]*>(.*?)</td>", page, flags=re.S)
    )
    assert longest <= LONG_TEXT + len("… (10,000 characters)")
    assert "… (300 in all)" in page, "the class list is counted, not written out"
    assert ",".join(NAMES) in manifest["command"], "manifest.json keeps the command whole"
    assert manifest["config"]["classes"]["value"] == list(NAMES)


def _class(name: str, sensitivity: float, support: int) -> ClassMetrics:
    return ClassMetrics(name, 0.5, sensitivity, 0.5, 0.5, support, 0.5)


def test_worst_classes_skip_classes_without_images_and_break_ties_by_name() -> None:
    per_class = (
        _class("b", 0.5, 3),
        _class("a", 0.5, 2),
        _class("c", float("nan"), 0),
        _class("d", 0.1, 1),
    )
    assert [c.name for c in worst_classes(per_class, 2)] == ["d", "a"]


def test_top_confusions_rank_by_images_then_class_order_and_skip_the_diagonal() -> None:
    per_class = (_class("a", 0.0, 4), _class("b", 0.0, 2), _class("c", 0.0, 0))
    cells = (Confusion(0, 0, 5), Confusion(0, 2, 1), Confusion(1, 0, 1), Confusion(0, 1, 3))

    rows = top_confusions(cells, per_class, 2)

    assert [(r.true, r.predicted, r.images, r.share) for r in rows] == [
        ("a", "b", 3, 3 / 4),
        ("a", "c", 1, 1 / 4),
    ]
