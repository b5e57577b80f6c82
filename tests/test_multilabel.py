"""Multi-label models, unit by unit: manifests of label sets, the output's reading, the
metrics against scikit-learn's multi-label metrics, which images and labels are explained.

The audit of a multi-label model end to end is in ``test_multilabel_audit.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from auditor.data import discover
from auditor.errors import ConfigError, DataError, ModelError
from auditor.load import (
    OutputKind,
    check_output,
    class_scores,
    detect_output_kind,
    to_probabilities,
)
from auditor.multilabel.cases import label_cases, labels_of, select_label_cases
from auditor.multilabel.metrics import called, compute_label_metrics, label_thresholds
from auditor.resample import Resampling
from tests.helpers import write_manifest, write_png

NAMES = ("a", "b", "c")


def _manifest(folder: Path, labels: list[str], **extra: list[str]) -> Path:
    rows = []
    for i, label in enumerate(labels):
        write_png(folder / f"x{i}.png", seed=i, size=8)
        rows.append({"path": f"x{i}.png", "label": label} | {k: v[i] for k, v in extra.items()})
    return write_manifest(folder, rows)


# ------------------------------------------------------------------------------ manifests


def test_a_manifest_of_label_sets_is_multi_label_with_every_label_named(tmp_path: Path) -> None:
    dataset = discover(_manifest(tmp_path, ["b;a", "-", "c", " a ; c ;", "b"]))

    assert dataset.multi_label and dataset.classes == NAMES
    assert [s.labels for s in dataset.samples] == [(0, 1), (), (2,), (0, 2), (1,)]
    assert [s.label for s in dataset.samples] == [-1] * 5
    assert [dataset.label_text(s) for s in dataset.samples] == ["a;b", "-", "c", "a;c", "b"]


def test_one_label_per_row_is_single_label_unless_declared(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, ["a", "b", "c"])

    assert not discover(manifest).multi_label
    declared = discover(manifest, output="multi-label")
    assert declared.multi_label and [s.labels for s in declared.samples] == [(0,), (1,), (2,)]
    forced = discover(_manifest(tmp_path / "x", ["a;b", "b"]), output="single-label")
    assert not forced.multi_label and forced.classes == ("a;b", "b")


def test_label_sets_keep_the_declared_label_order(tmp_path: Path) -> None:
    dataset = discover(_manifest(tmp_path, ["c;a", "b"]), classes=("c", "b", "a"))

    assert [s.labels for s in dataset.samples] == [(0, 2), (1,)]


@pytest.mark.parametrize(
    ("labels", "classes", "fragments"),
    [
        (["a;-", "b"], None, ("row 2", "'-' (no label) together with labels")),
        (["a;z", "b"], ("a", "b"), ("label 'z'", "not in the class list")),
    ],
)
def test_a_bad_label_set_is_a_one_line_error(
    tmp_path: Path, labels: list[str], classes: tuple[str, ...] | None, fragments: tuple[str, ...]
) -> None:
    with pytest.raises(DataError) as error:
        discover(_manifest(tmp_path, labels), classes=classes)

    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_an_empty_label_cell_is_excluded_with_its_reason(tmp_path: Path) -> None:
    dataset = discover(_manifest(tmp_path, ["a;b", "", "c"]))

    assert len(dataset.samples) == 2
    assert [(e.relpath, e.reason) for e in dataset.excluded] == [("x1.png", "row 3 has no label")]


def test_a_folder_of_classes_cannot_be_multi_label(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "x.png", seed=0, size=8)
    write_png(tmp_path / "b" / "y.png", seed=1, size=8)

    with pytest.raises(DataError, match="needs a CSV manifest whose label cells list"):
        discover(tmp_path, output="multi-label")


# ------------------------------------------------------------------------ the model's output


def test_one_score_per_label_is_read_as_logits_or_as_probabilities() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.5]])

    assert detect_output_kind(logits, NAMES, "m.pt", multi_label=True) is OutputKind.LABEL_LOGITS
    found = detect_output_kind(torch.sigmoid(logits), NAMES, "m.pt", multi_label=True)
    assert found is OutputKind.LABEL_PROBABILITIES
    assert torch.equal(to_probabilities(logits, OutputKind.LABEL_LOGITS), torch.sigmoid(logits))
    assert torch.equal(class_scores(logits, OutputKind.LABEL_LOGITS), logits)
    # rows of sigmoid probabilities need not sum to 1, and one label may be the only one
    assert OutputKind.LABEL_LOGITS.multi_label and not OutputKind.LOGITS.multi_label


def test_a_multi_label_output_of_the_wrong_width_is_a_one_line_error() -> None:
    with pytest.raises(ModelError, match=r"outputs 2 scores per image but the data has 3 labels"):
        detect_output_kind(torch.zeros(4, 2), NAMES, "m.pt", multi_label=True)
    with pytest.raises(ModelError, match="looked like probabilities"):
        check_output(torch.tensor([[0.2, 1.5, 0.1]]), OutputKind.LABEL_PROBABILITIES, 3, 1, "m")


# ------------------------------------------------------------------------------ the metrics


def _data(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels of three prevalences, and probabilities that are informative but imperfect."""
    rng = np.random.default_rng(seed)
    truth = rng.random((n, 3)) < np.array([0.5, 0.2, 0.05])
    probabilities = 1 / (1 + np.exp(-(2.5 * truth - 1.2 + rng.normal(0, 1, (n, 3)))))
    return truth, probabilities.astype(np.float32)


def test_the_metrics_equal_scikit_learns_multi_label_metrics() -> None:
    truth, probabilities = _data()
    thresholds = np.array([0.5, 0.3, 0.6])
    calls = probabilities >= thresholds

    m = compute_label_metrics(truth, probabilities, NAMES, thresholds, resamples=200)

    assert m.subset_accuracy.value == pytest.approx(skm.accuracy_score(truth, calls))
    assert m.hamming_loss.value == pytest.approx(skm.hamming_loss(truth, calls))
    assert m.macro_auc is not None and m.micro_auc is not None
    assert m.macro_auc.value == pytest.approx(skm.roc_auc_score(truth, probabilities))
    micro = skm.roc_auc_score(truth, probabilities, average="micro")
    assert m.micro_auc.value == pytest.approx(micro)
    confusion = skm.multilabel_confusion_matrix(truth, calls)  # per label [[tn, fp], [fn, tp]]
    recall = skm.recall_score(truth, calls, average=None)
    precision = skm.precision_score(truth, calls, average=None)
    f1 = skm.f1_score(truth, calls, average=None)
    aucs = skm.roc_auc_score(truth, probabilities, average=None)
    for k, row in enumerate(m.labels):
        (tn, fp), _ = confusion[k]
        assert row.sensitivity.value == pytest.approx(recall[k])
        assert row.specificity.value == pytest.approx(tn / (tn + fp))
        assert (row.precision, row.f1) == pytest.approx((precision[k], f1[k]))
        assert row.auc is not None and row.auc.value == pytest.approx(aucs[k])
        assert (row.positives, row.called) == (truth[:, k].sum(), calls[:, k].sum())
        assert row.threshold == thresholds[k]
    assert m.mean_labels == pytest.approx(truth.sum(axis=1).mean())


def test_every_interval_holds_its_value_and_narrows_with_more_images() -> None:
    small = compute_label_metrics(*_data(100), NAMES, np.full(3, 0.5), resamples=300)
    large = compute_label_metrics(*_data(3000), NAMES, np.full(3, 0.5), resamples=300)

    for m in (small, large):
        estimates = [m.subset_accuracy, m.hamming_loss, m.macro_auc, m.micro_auc]
        estimates += [e for r in m.labels for e in (r.sensitivity, r.specificity, r.auc)]
        for e in estimates:
            assert e is not None and e.ci_low <= e.value <= e.ci_high
    width = small.subset_accuracy.ci_high - small.subset_accuracy.ci_low
    assert large.subset_accuracy.ci_high - large.subset_accuracy.ci_low < width / 2


def test_resampling_patients_widens_the_intervals_of_images_that_come_in_copies() -> None:
    truth, probabilities = _data(150)
    truth, probabilities = np.repeat(truth, 4, axis=0), np.repeat(probabilities, 4, axis=0)
    patients = pd.DataFrame({"patient": [f"p{i // 4}" for i in range(len(truth))]})
    thresholds = np.full(3, 0.5)

    images = compute_label_metrics(truth, probabilities, NAMES, thresholds, resamples=400)
    grouped = compute_label_metrics(
        truth, probabilities, NAMES, thresholds, 400, 0, Resampling.of(patients, "patient")
    )

    def width(m: object) -> float:
        e = m.hamming_loss  # type: ignore[attr-defined]
        return float(e.ci_high - e.ci_low)

    assert width(grouped) > 1.5 * width(images)
    assert grouped.resampled.startswith("groups of patient (150 groups")


def test_a_label_no_image_has_is_undefined_not_zero() -> None:
    truth, probabilities = _data()
    truth[:, 2] = False

    m = compute_label_metrics(truth, probabilities, NAMES, np.full(3, 0.5), resamples=100)

    absent = m.labels[2]
    assert np.isnan(absent.sensitivity.value) and absent.auc is None
    assert absent.best_threshold is None and absent.specificity.value > 0
    assert m.macro_auc is not None
    assert m.macro_auc.value == pytest.approx(skm.roc_auc_score(truth[:, :2], probabilities[:, :2]))


def test_thresholds_are_one_for_every_label_or_one_each() -> None:
    assert label_thresholds((0.4,), NAMES).tolist() == [0.4, 0.4, 0.4]
    assert label_thresholds((0.1, 0.2, 0.3), NAMES).tolist() == [0.1, 0.2, 0.3]
    with pytest.raises(ConfigError, match="gives 2 thresholds for 3 labels"):
        label_thresholds((0.1, 0.2), NAMES)
    probabilities = np.array([[0.35, 0.5, 0.9]], dtype=np.float32)
    assert called(probabilities, np.array([0.3, 0.5, 0.95])).tolist() == [[True, True, False]]


# ---------------------------------------------------------------- what is explained, and for what


def _predictions(labels: list[str], calls: list[str]) -> pd.DataFrame:
    pairs = zip(labels, calls, strict=True)
    wrong = [len(set(labels_of(a)) ^ set(labels_of(b))) for a, b in pairs]
    return pd.DataFrame(
        {
            "index": range(len(labels)),
            "label": labels,
            "prediction": calls,
            "correct": [w == 0 for w in wrong],
            "errors": wrong,
        }
    )


def test_the_sample_spreads_over_the_labels_and_the_errors_come_most_wrong_first() -> None:
    labels = ["a"] * 10 + ["b"] * 10 + ["c", "-", "a;b", "-"]
    calls = ["a"] * 10 + ["b"] * 9 + ["-", "c", "-", "a", "a;c"]
    predictions = _predictions(labels, calls)

    selection = select_label_cases(predictions, NAMES, limit=4, seed=0)

    sampled = predictions.set_index("index").loc[list(selection.sampled), "label"].tolist()
    assert len(sampled) == 4 and "-" in sampled  # one image per label, and one with none
    assert {"a", "b", "c"} <= {n for text in sampled for n in labels_of(text)}
    assert selection.n_errors == 3
    assert selection.misclassified == (23, 19, 22)  # 2 wrong labels, then 1 each, by index


def test_each_called_label_is_explained_and_a_missed_one_too_for_an_error() -> None:
    predictions = _predictions(["a;b", "c"], ["b;c", "c"])
    selection = select_label_cases(predictions, NAMES, limit=2, seed=0)

    cases = label_cases(selection, predictions, NAMES)

    assert [(c.index, c.group, c.role, c.target) for c in cases] == [
        (0, "misclassified", "predicted:b", 1),
        (0, "misclassified", "predicted:c", 2),
        (0, "misclassified", "missed:a", 0),
        (1, "sampled", "predicted:c", 2),
    ]
