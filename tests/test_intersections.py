"""Declared intersections of metadata columns, each group's AUC and ECE, the forest plot,
and the operating threshold behind every subgroup rate."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from auditor.aggregate.figures import interval_errors
from auditor.aggregate.subgroups import forest_figure
from auditor.clinical import ClinicalSettings, metadata_dependence
from auditor.clinical.fairness import fairness
from auditor.clinical.groups import metadata_groups
from auditor.metrics import ECE_BINS
from tests.helpers import invoke, one_line_error, probability

CLASSES = ("benign", "malignant")


def _predictions(seed: int = 0, n: int = 1200) -> pd.DataFrame:
    """Benign images from site A *and* sex F are called malignant far more often; neither
    value alone carries much of it."""
    rng = np.random.default_rng(seed)
    label = rng.choice(CLASSES, n)
    site = rng.choice(["A", "B"], n)
    sex = rng.choice(["F", "M"], n)
    both = (site == "A") & (sex == "F")
    called = rng.random(n) < np.where(label == "malignant", 0.85, np.where(both, 0.35, 0.05))
    return pd.DataFrame(
        {
            "label": label,
            "prediction": np.where(called, "malignant", "benign"),
            "p_malignant": probability(called, rng),
            "site": site,
            "sex": sex,
        }
    )


def test_an_intersection_is_one_more_column_of_paired_values() -> None:
    predictions = _predictions(n=40)
    grouping = metadata_groups(predictions, ("site", "sex"), 20, ("site*sex",))

    paired = grouping.groups["site × sex"]
    assert list(grouping.groups) == ["site", "sex", "site × sex"]
    assert (paired == predictions["site"] + " × " + predictions["sex"]).all()
    many = metadata_groups(predictions, ("site", "sex"), 3, ("site*sex",))
    assert "site × sex" not in many.groups
    assert ("site × sex", "4 values, more than max-groups (3); not broken down") in many.skipped


def test_a_dependence_only_in_the_pair_is_found_in_the_pair() -> None:
    predictions = _predictions()
    settings = ClinicalSettings(intersections=("site*sex",), permutations=1000)
    grouping = metadata_groups(predictions, ("site", "sex"), 20, settings.intersections)

    dependence = metadata_dependence(predictions, grouping, CLASSES, settings)

    assert dependence is not None
    pair = next(c for c in dependence.columns if c.column == "site × sex")
    assert pair.finding and pair.high == "A × F" and pair.label == "benign"
    alone = {c.column: c.difference for c in dependence.columns}
    assert pair.difference > max(alone["site"], alone["sex"]) + 0.1


def test_each_group_s_auc_and_ece_equal_a_recomputation() -> None:
    predictions = _predictions(n=600)
    rng = np.random.default_rng(3)
    predictions["p_malignant"] = np.clip(
        np.where(predictions["label"] == "malignant", 0.65, 0.35) + rng.normal(0, 0.2, 600), 0, 1
    )
    grouping = metadata_groups(predictions, ("site",), 20)

    result = fairness(predictions, grouping, "malignant", ClinicalSettings(), 300)

    assert result is not None
    for group in result.groups:
        rows = predictions[predictions["site"] == group.value]
        y = (rows["label"] == "malignant").to_numpy()
        p = rows["p_malignant"].to_numpy()
        assert group.auc is not None and group.ece is not None
        assert group.auc.value == pytest.approx(roc_auc_score(y, p))
        assert group.auc.ci_low < group.auc.value < group.auc.ci_high
        # Equal-width bins, each (lower, upper], the first also holding 0.
        bins = np.clip(np.ceil(p * ECE_BINS) - 1, 0, ECE_BINS - 1)
        ece = sum(abs(y[bins == b].sum() - p[bins == b].sum()) for b in range(ECE_BINS)) / len(p)
        assert group.ece.value == pytest.approx(ece)
        assert group.ece.ci_low <= group.ece.value <= group.ece.ci_high
    judged = [g for g in result.groups if not g.too_few]
    assert result.lowest[("site", "auc")] == min(judged, key=lambda g: g.auc.value).value  # type: ignore[union-attr]
    assert result.lowest[("site", "ece")] == max(judged, key=lambda g: g.ece.ci_low).value  # type: ignore[union-attr]
    assert result.lowest[("site", "npv")] == min(judged, key=lambda g: g.npv.value).value


def test_subgroup_rates_are_counted_at_the_operating_threshold() -> None:
    predictions = _predictions(n=400)
    grouping = metadata_groups(predictions, ("site",), 20)

    result = fairness(predictions, grouping, "malignant", ClinicalSettings(), 100, threshold=0.8)

    assert result is not None
    for group in result.groups:
        rows = predictions[predictions["site"] == group.value]
        y, called = rows["label"] == "malignant", rows["p_malignant"] >= 0.8
        assert (group.sensitivity.hits, group.sensitivity.n) == ((y & called).sum(), y.sum())


def test_the_forest_plot_draws_the_judged_groups_only() -> None:
    predictions = _predictions(n=400)
    grouping = metadata_groups(predictions, ("site", "sex"), 20, ("site*sex",))
    result = fairness(predictions, grouping, "malignant", ClinicalSettings(), 100)
    assert result is not None

    assert forest_figure(result.groups, (0.8, 0.9)).startswith("data:image/png;base64,")
    small = fairness(predictions, grouping, "malignant", ClinicalSettings(min_group_size=500), 100)
    assert small is not None and forest_figure(small.groups, (0.8, 0.9)) == ""


def test_the_forest_plot_draws_an_interval_that_rounds_below_its_value() -> None:
    """Wilson's upper bound at 12 of 12 is 1 - 1e-16 in floating point (a demo subgroup of
    48 images crashed matplotlib's errorbar with a negative error)."""
    predictions = _predictions(n=400)
    result = fairness(predictions, metadata_groups(predictions, ("site",), 20), "malignant",
                      ClinicalSettings(), 100)  # fmt: skip
    assert result is not None
    first = result.groups[0]
    rounded = dataclasses.replace(first.sensitivity, value=1.0, ci_high=1.0 - 1e-16)
    groups = (dataclasses.replace(first, sensitivity=rounded), *result.groups[1:])

    assert forest_figure(groups, (0.8, 0.9)).startswith("data:image/png;base64,")


def test_an_intersection_of_a_column_the_data_lacks_is_a_one_line_error(
    tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    config = tmp_path / "audit.toml"
    config.write_text('[clinical]\nintersections = ["site*sex"]\n')
    result = invoke(
        "run", "--model", str(tiny_model), "--data", str(manifest), "--out", str(tmp_path / "o"),
        "--config", str(config),
    )  # fmt: skip

    one_line_error(result, "intersections 'site*sex': column 'sex' is not a column")
    assert not (tmp_path / "o").exists()


def test_interval_errors_are_never_negative_and_zero_where_a_bound_is_missing() -> None:
    errors = interval_errors([1.0, 0.5, 0.2], [0.9, 0.4, float("nan")], [1.0 - 1e-16, 0.7, 0.3])

    np.testing.assert_allclose(errors, [[0.1, 0.1, 0.0], [0.0, 0.2, 0.1]])
