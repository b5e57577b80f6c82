"""Behavioural tests of case selection: stratified sample and most confident errors."""

from __future__ import annotations

import pandas as pd
import pytest

from auditor.select import Selection, select_cases


def _predictions(
    labels: list[str],
    correct: list[bool] | None = None,
    confidence: list[float] | None = None,
    first_index: int = 100,
) -> pd.DataFrame:
    """A predictions table whose sample indices start at ``first_index``, not at row 0."""
    n = len(labels)
    correct = [True] * n if correct is None else correct
    confidence = [0.9] * n if confidence is None else confidence
    names = sorted(set(labels))
    predictions = [
        label if ok else names[(names.index(label) + 1) % len(names)]
        for label, ok in zip(labels, correct, strict=True)
    ]
    return pd.DataFrame(
        {
            "index": pd.Series(range(first_index, first_index + n), dtype="int64"),
            "label": pd.Series(labels, dtype="string"),
            "prediction": pd.Series(predictions, dtype="string"),
            "confidence": pd.Series(confidence, dtype="float64"),
            "correct": pd.Series(correct, dtype="bool"),
        }
    )


def _by_class(frame: pd.DataFrame, sampled: tuple[int, ...]) -> dict[str, list[int]]:
    labels = dict(zip(frame["index"].tolist(), frame["label"].tolist(), strict=True))
    grouped: dict[str, list[int]] = {}
    for index in sampled:
        grouped.setdefault(labels[index], []).append(index)
    return grouped


def test_stratified_quota_gives_the_extra_place_to_the_first_class() -> None:
    frame = _predictions(["a"] * 10 + ["b"] * 10)

    selection = select_cases(frame, ("a", "b"), limit=5, seed=0)

    grouped = _by_class(frame, selection.sampled)
    assert {k: len(v) for k, v in grouped.items()} == {"a": 3, "b": 2}
    # Grouped by class in class order, sorted inside each class, no repeats.
    assert list(selection.sampled) == sorted(grouped["a"]) + sorted(grouped["b"])
    assert len(set(selection.sampled)) == 5
    assert all(100 <= i < 110 for i in grouped["a"])
    assert all(110 <= i < 120 for i in grouped["b"])


def test_stratified_quota_follows_class_order_not_alphabetical_order() -> None:
    frame = _predictions(["a"] * 10 + ["b"] * 10 + ["c"] * 10)

    selection = select_cases(frame, ("c", "b", "a"), limit=7, seed=0)

    grouped = _by_class(frame, selection.sampled)
    assert {k: len(v) for k, v in grouped.items()} == {"c": 3, "b": 2, "a": 2}
    assert list(selection.sampled) == sorted(grouped["c"]) + sorted(grouped["b"]) + sorted(
        grouped["a"]
    )


def test_small_class_gives_its_places_to_the_others() -> None:
    frame = _predictions(["a"] * 1 + ["b"] * 10 + ["c"] * 3)

    selection = select_cases(frame, ("a", "b", "c"), limit=9, seed=0)

    grouped = _by_class(frame, selection.sampled)
    # Shares 3/3/3; "a" has only 1, its 2 spare places go round-robin to "b" and "c",
    # but "c" is full at 3, so "b" takes them: 1 + 5 + 3 = 9.
    assert {k: len(v) for k, v in grouped.items()} == {"a": 1, "b": 5, "c": 3}
    assert grouped["a"] == [100]
    assert sorted(grouped["c"]) == [111, 112, 113]


def test_limit_above_the_number_of_images_samples_everything() -> None:
    frame = _predictions(["a"] * 2 + ["b"] * 3)

    selection = select_cases(frame, ("a", "b"), limit=50, seed=3)

    assert selection.sampled == (100, 101, 102, 103, 104)


def test_class_without_images_is_skipped() -> None:
    # Bug (pandas >= 3 with numpy 2.x): for a class with no rows, ``.to_numpy()`` gives an
    # empty read-only array and ``Generator.permutation`` raises "ValueError: array is
    # read-only". Reached when --classes names a class absent from the data, or when every
    # image of a class failed to load.
    frame = _predictions(["a"] * 4 + ["c"] * 4)

    selection = select_cases(frame, ("a", "b", "c"), limit=6, seed=0)

    grouped = _by_class(frame, selection.sampled)
    assert {k: len(v) for k, v in grouped.items()} == {"a": 3, "c": 3}


def test_same_seed_same_sample_other_seed_other_sample() -> None:
    frame = _predictions(["a"] * 30 + ["b"] * 30)

    first = select_cases(frame, ("a", "b"), limit=6, seed=42)
    again = select_cases(frame, ("a", "b"), limit=6, seed=42)
    others = {select_cases(frame, ("a", "b"), limit=6, seed=s).sampled for s in range(5)}

    assert first == again
    assert first.sampled != select_cases(frame, ("a", "b"), limit=6, seed=43).sampled
    # C(30,3)^2 ~ 1.6e7 possible samples: five seeds giving a repeat would be a broken seed.
    assert len(others) == 5


def test_misclassified_by_decreasing_confidence_ties_by_index_and_capped() -> None:
    labels = ["a", "b", "a", "b", "a", "b", "a", "b"]
    correct = [False, True, False, False, True, False, False, True]
    confidence = [0.60, 0.99, 0.90, 0.75, 0.95, 0.90, 0.55, 0.80]
    frame = _predictions(labels, correct, confidence)

    capped = select_cases(frame, ("a", "b"), limit=3, seed=0)
    full = select_cases(frame, ("a", "b"), limit=10, seed=0)

    # Errors: 100 (.60), 102 (.90), 103 (.75), 105 (.90), 106 (.55).
    assert full.misclassified == (102, 105, 103, 100, 106)
    assert capped.misclassified == (102, 105, 103)
    assert capped.n_errors == 5
    assert full.n_errors == 5


def test_limit_zero_selects_nothing_but_still_counts_errors() -> None:
    frame = _predictions(["a", "b", "a", "b"], [False, True, True, False], [0.7, 0.8, 0.9, 0.6])

    selection = select_cases(frame, ("a", "b"), limit=0, seed=0)

    assert selection == Selection(sampled=(), misclassified=(), n_errors=2)


def test_no_errors_gives_empty_misclassified() -> None:
    frame = _predictions(["a", "b", "a", "b"])

    selection = select_cases(frame, ("a", "b"), limit=4, seed=0)

    assert selection.misclassified == ()
    assert selection.n_errors == 0
    assert selection.sampled == (100, 102, 101, 103)  # class "a" first, then "b"


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 11, 20])
def test_sample_size_is_min_of_limit_and_images(limit: int) -> None:
    frame = _predictions(["a"] * 2 + ["b"] * 5 + ["c"] * 4)

    selection = select_cases(frame, ("a", "b", "c"), limit=limit, seed=5)

    assert len(selection.sampled) == min(limit, 11)
    assert len(set(selection.sampled)) == len(selection.sampled)
