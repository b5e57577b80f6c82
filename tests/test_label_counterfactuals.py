"""Counterfactuals of a multi-label model: each search flips one label's call.

The label read as a two-class model (:class:`auditor.counterfactual.labels.LabelFlip`)
must call what the label's threshold calls, and give back the label's probability; a
misclassified case is searched for each wrong call, the most confident first, a sampled
one for its most confident call; the artefact tallies count images, not searches. The
scanner audit (conftest.py) has images whose effusion call only the scanner's mark
makes: their counterfactuals flip effusion.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from auditor.aggregate.counterfactuals import _left_out
from auditor.counterfactual.files import artifact_counts
from auditor.counterfactual.labels import LabelFlip, label_flips
from auditor.counterfactual.settings import CounterfactualSettings
from auditor.counterfactual.stage import Counterfactuals, _cases
from auditor.multilabel.evaluation import label_matrix
from auditor.policy import evaluate_policy, parse_policy
from auditor.select import Selection
from tests.labels import (
    LABELS,
    MARK_CONCEPT,
    ChannelLabels,
    make_label_dataset,
    run_label_audit,
)


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize("probabilities_only", [False, True])
def test_the_two_class_model_calls_what_the_labels_threshold_calls(
    probabilities_only: bool,
) -> None:
    """At a threshold of 0.25 (exact in float32), a probability at it included, as the
    evaluation calls (p >= t)."""
    flip = LabelFlip(1, "b", 0.25, True, probabilities_only)
    p = torch.tensor([[0.9, 0.35, 0.1], [0.9, 0.2, 0.1], [0.2, 0.25, 0.9], [0.5, 0.2499, 0.5]])
    scores = p if probabilities_only else torch.logit(p)

    two = flip.probabilities(p)
    logits = flip.scores(scores)

    assert two.argmax(1).tolist() == [1, 0, 1, 0] == (p[:, 1] >= 0.25).long().tolist()
    # The gradient search's call too, but at the tie: a float32 logit of 0.25 may fall
    # below the threshold's; the fresh pass, through the probabilities, decides validity.
    assert logits.argmax(1)[[0, 1, 3]].tolist() == [1, 0, 0]
    assert torch.allclose(two.sum(1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(torch.softmax(logits, 1), two, atol=1e-6)
    for row in range(4):
        for new in (0, 1):
            back = flip.label_probability(new, float(two[row, new]))
            assert back == pytest.approx(float(p[row, 1]), abs=1e-6)
    assert flip.calls == ("not b", "b") and flip.original == 1


def test_a_confident_labels_two_class_logit_keeps_its_gradient() -> None:
    """A probability of 1 - 1e-7 (float32's last steps) is not clamped flat."""
    flip = LabelFlip(0, "a", 0.5, True, True)
    p = torch.tensor([[1 - 1e-7]], requires_grad=True)
    flip.scores(p)[0, 1].backward()
    assert p.grad is not None and float(p.grad[0, 0]) > 1e6


def test_each_wrong_call_is_searched_the_surest_first_and_a_sampled_case_once() -> None:
    frame = pd.DataFrame({
        "index": [0, 1, 2, 3],
        "label": ["a", "a;b", "-", "c"],
        "prediction": ["b", "a;b", "-", "b;c"],
        "p_a": [0.45, 0.9, 0.2, 0.1],
        "p_b": [0.6, 0.7, 0.1, 0.99],
        "p_c": [0.1, 0.1, 0.3, 0.8],
    })  # fmt: skip
    cases = [(0, "misclassified"), (1, "sampled"), (2, "sampled"), (3, "misclassified")]

    searches, left_out = label_flips(frame, cases, ("a", "b", "c"), (0.5, 0.5, 0.5), False, 3)
    capped, capped_out = label_flips(frame, cases, ("a", "b", "c"), (0.5, 0.5, 0.5), False, 1)

    # 0: b called at 0.6 (0.41 logits over) is surer than a missed at 0.45 (0.2 short);
    # 1: its surest call; 2: called for none, the closest to being called; 3: one wrong
    assert [(i, role, f.name, f.called) for i, role, f in searches] == [
        (0, "misclassified", "b", True), (0, "misclassified", "a", False),
        (1, "sampled", "a", True), (2, "sampled", "c", False), (3, "misclassified", "b", True),
    ]  # fmt: skip
    assert left_out == 0 and capped_out == 1, "at most 1 a case: image 0's a is left out"
    assert [(i, f.name) for i, _, f in capped] == [(0, "b"), (1, "a"), (2, "c"), (3, "b")]
    settings = CounterfactualSettings(counterfactual_labels=1)
    result = Counterfactuals(pd.DataFrame(), (), "mean", (), (), 0, 0.0, settings, capped_out)
    assert _left_out(result) == (
        "1 wrong call of a misclassified image was not searched: only each image's 1 most "
        "confident are (counterfactual-labels).",
    )


def test_the_artefact_tallies_count_images_not_searches() -> None:
    """Image 0's two wrong calls both have valid segment counterfactuals over the mark,
    one removing it; image 1's one does not cover it; image 2 does not show it."""
    frame = pd.DataFrame({
        "index": [0, 0, 1, 2], "role": ["misclassified"] * 3 + ["sampled"],
        "kind": "segments", "valid": [True, True, True, True],
        "flipped_label": ["nodule", "effusion", "effusion", "nodule"],
        "covers_mark_mask": [0.1, 0.8, 0.2, math.nan],
    })  # fmt: skip
    result = Counterfactuals(frame, (), "mean", ("mark_mask",), ("mark_mask",), 0, 0.0,
                             CounterfactualSettings())  # fmt: skip

    (count,) = artifact_counts(result)

    assert (count.shown, count.removed) == (2, 1)
    assert (count.misclassified_shown, count.misclassified_removed) == (2, 1)


def test_each_case_flips_its_chosen_label_and_the_files_agree(scanner_audit: Path) -> None:
    rows = pd.read_csv(scanner_audit / "counterfactuals.csv", keep_default_na=False)
    predictions = pd.read_csv(scanner_audit / "predictions.csv", keep_default_na=False)
    metrics = json.loads((scanner_audit / "metrics.json").read_text())
    cases = list(dict.fromkeys(zip(rows["index"], rows["role"], strict=True)))
    searches, _ = label_flips(predictions, cases, LABELS, (0.5, 0.5, 0.5), False, 3)
    by_index = predictions.set_index("index")

    assert {"segments", "gradient"} == set(rows["kind"]) and rows["valid"].any()
    for kind in ("segments", "gradient"):  # one row per search and kind, in their order
        searched = rows[rows["kind"] == kind]
        assert list(zip(searched["index"], searched["flipped_label"], strict=True)) == [
            (i, f.name) for i, _, f in searches
        ]
    flips = {(i, f.name): f for i, _, f in searches}
    for row in rows.itertuples():
        flip = flips[row.index, row.flipped_label]
        called = label_matrix([by_index.at[row.index, "prediction"]], LABELS)[0, flip.label]
        assert called == flip.called
        if row.role == "misclassified":
            has = label_matrix([by_index.at[row.index, "label"]], LABELS)[0, flip.label]
            assert has != called, "a misclassified case flips a wrong call"
        if row.valid:
            assert row.new_class == flip.calls[1 - int(called)]
            assert (float(row.probability) >= 0.5) != called, "the label's call changed"
    wrong = rows[(rows["role"] == "misclassified") & (rows["kind"] == "segments")]
    assert set(wrong["flipped_label"]) == {"effusion"}, "only the mark makes a wrong call"
    kinds = {k["kind"]: k for k in metrics["counterfactuals"]["kinds"]}
    assert kinds["segments"]["valid"] == int(rows.query("kind == 'segments'")["valid"].sum())
    outcome = evaluate_policy(
        parse_policy({"findings.counterfactual_artifacts": ">= 0"}, "test"), metrics, None
    )
    assert outcome.passed and outcome.outcomes[0].value is not None


def test_the_report_shows_each_case_with_the_label_it_flips(scanner_audit: Path) -> None:
    rows = pd.read_csv(scanner_audit / "counterfactuals.csv", keep_default_na=False)
    html = (scanner_audit / "report.html").read_text(encoding="utf-8")
    section = " ".join(html[html.index('id="counterfactuals"') :].split())

    assert "each search flips one label's call at its threshold" in section
    first = rows.iloc[0]
    assert f"; flipping {first['flipped_label']}" in section
    valid = rows[rows["valid"].astype(bool)].iloc[0]
    caption = (
        f"{valid['kind']}: → {valid['new_class']}, p({valid['flipped_label']}) "
        f"{float(valid['probability']):.2f}"
    )
    assert caption in section
    assert np.isfinite(rows["passes"].astype(float)).all()


class MarkLabels(nn.Module):
    """:class:`ChannelLabels` with effusion's logit raised by 30 times how far the mean of
    channel 0 in the top-left 18 x 18 corner (the mark) exceeds 0.6: scanner X's mark alone calls
    effusion, and replacing it by the image's mean colour takes the call away."""

    def __init__(self) -> None:
        super().__init__()
        self.labels = ChannelLabels()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        corner = torch.relu(x[:, 0, :18, :18].mean(dim=(1, 2)) - 0.6)
        zero = torch.zeros_like(corner)
        return self.labels(x) + torch.stack([30 * corner, zero, zero], dim=1)


def test_removing_the_mark_flips_the_wrong_effusion_calls_and_page_one_says_so(
    tmp_path: Path,
) -> None:
    manifest = make_label_dataset(tmp_path / "data", n=32, scanner=True, mark_masks=True)
    config = MARK_CONCEPT + "tcav-runs = 0\nmaximise-steps = 0\nrobustness-images = 0\n"
    result = run_label_audit(MarkLabels(), manifest, tmp_path, config)
    folder = Path(result.stdout.strip().splitlines()[-1])
    rows = pd.read_csv(folder / "counterfactuals.csv")
    summary = (folder / "summary.md").read_text(encoding="utf-8")

    wrong = rows[(rows["role"] == "misclassified") & (rows["kind"] == "segments")]
    assert len(wrong) and (wrong["flipped_label"] == "effusion").all()
    assert wrong["valid"].all() and (wrong["covers_mark_mask"] >= 0.5).all()
    assert (wrong["new_class"] == "not effusion").all() and (wrong["probability"] < 0.5).all()
    n = len(wrong)
    sentence = (
        f"Removing the artefact concept mark\\_mask flips a wrong call of effusion on {n} of "
        f"the {n} misclassified images that show it and have a segment counterfactual"
    )
    assert f"**Counterfactuals.** {sentence}" in summary
    metrics = json.loads((folder / "metrics.json").read_text())
    outcome = evaluate_policy(
        parse_policy({"findings.counterfactual_artifacts": "== 0"}, "test"), metrics, None
    )
    assert outcome.failed[0].value == n


def test_an_image_both_misclassified_and_sampled_is_searched_as_misclassified(
    tmp_path: Path,
) -> None:
    """Every image explained (sampled), its errors too: each image is searched in one role,
    a misclassified one for its wrong calls, so the tallies and page one count its
    finding (they read ``role``)."""
    assert _cases(pd.DataFrame({"index": range(6)}),
                  Selection(sampled=(1, 2, 3), misclassified=(2, 5), n_errors=2), 10) == [
        (2, "misclassified"), (5, "misclassified"), (1, "sampled"), (3, "sampled"),
    ]  # fmt: skip
    manifest = make_label_dataset(tmp_path / "data", n=32, scanner=True, mark_masks=True)
    config = MARK_CONCEPT + "tcav-runs = 0\nmaximise-steps = 0\nrobustness-images = 0\n"
    flags = ("--explain-samples", "32", "--counterfactual-images", "40")
    result = run_label_audit(MarkLabels(), manifest, tmp_path, config + "wachter-steps = 0\n",
                             flags)  # fmt: skip
    folder = Path(result.stdout.strip().splitlines()[-1])
    rows = pd.read_csv(folder / "counterfactuals.csv")
    wrong = set(pd.read_csv(folder / "predictions.csv").query("not correct")["index"])
    summary = (folder / "summary.md").read_text(encoding="utf-8")

    assert rows.groupby("index")["role"].nunique().max() == 1
    assert set(rows.query("role == 'misclassified'")["index"]) == wrong and wrong
    removed = rows[(rows["role"] == "misclassified") & rows["valid"]
                   & (rows["covers_mark_mask"] >= 0.5)]["index"].nunique()  # fmt: skip
    shown = rows[(rows["role"] == "misclassified") & rows["valid"]
                 & rows["covers_mark_mask"].notna()]["index"].nunique()  # fmt: skip
    assert removed and f"effusion on {removed} of the {shown} misclassified images" in summary
