"""The trust checks' parts, on cases whose answer is known.

Randomisation redraws exactly the modules of each cascade step on a copy; deletion and
insertion curves of a linear model follow its logit by hand; localisation, verdicts and
the shortcut finding are checked on hand-built maps and records.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from auditor.explain import Batch, ExplainContext, ExplainSettings, Method
from auditor.explain.engine import build_context
from auditor.explain.integrated_gradients import blurred
from auditor.explain.store import Case, MapStore
from auditor.images import Preprocessing
from auditor.load import OutputKind
from auditor.measure import RECORD_DTYPES
from auditor.measure.check import Check, Evidence, MapRun
from auditor.measure.faithfulness import area, curves, pixel_order
from auditor.measure.localisation import energy_inside, pointing_hit, read_mask, top_iou
from auditor.measure.maps import recompute
from auditor.measure.randomisation import cascade, randomised_models
from auditor.measure.records import Records, TrustCase, TrustSettings
from auditor.measure.registry import CHECKS
from auditor.measure.shortcuts import GroupCase, find_shortcuts, region_name, region_share
from auditor.measure.similarity import mean_ci
from auditor.measure.stability import map_instability
from auditor.measure.verdicts import VERDICT_COLUMNS, verdict_columns, verdict_table
from tests.helpers import (
    TinyNet,
    explain_context,
    loaded_model,
    torchscript_twin,
    varied_tiny_net,
)

ORDER = {"features.0": 1, "features.1": 2, "features.4": 5, "classifier": 9}


@pytest.mark.parametrize("mode", ["script", "trace", "export"])
def test_the_cascade_runs_from_the_output_layer_down_and_redraws_only_its_modules(
    mode: str,
) -> None:
    model = loaded_model(torchscript_twin(varied_tiny_net(), mode, 16))
    steps = cascade(model, ORDER, 3)
    assert [s.label for s in steps] == ["classifier", "features.1", "features.0"]
    assert steps[0].modules == ("classifier",)
    assert steps[-1].modules == ("classifier", "features.4", "features.1", "features.0")
    assert [s.share for s in steps] == [0.25, 0.75, 1.0]
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    for step, randomised in randomised_models(model, steps, seed=0):
        state = randomised.module.state_dict()
        for name, value in state.items():
            owner = name.rpartition(".")[0]
            changed = not torch.equal(value, before[name])
            is_parameter = name.endswith(("weight", "bias")) and "running" not in name
            assert changed == (is_parameter and owner in step.modules), (step.label, name)
        x = torch.rand(2, 3, 16, 16)
        assert not torch.allclose(randomised.tapped(x)[0], model.module(x)), "taps read the copy"
    for name, value in model.module.state_dict().items():
        assert torch.equal(value, before[name]), f"the audited model's {name} was changed"


def test_a_frozen_model_has_nothing_to_randomise() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frozen = torch.jit.freeze(torch.jit.script(TinyNet().eval()))
    assert cascade(loaded_model(frozen), {}, 4) == ()


def test_redrawn_weights_keep_each_tensors_scale() -> None:
    model = loaded_model(torchscript_twin(varied_tiny_net(), "script", 16))
    original = model.module.state_dict()["features.4.weight"].clone()
    steps = cascade(model, ORDER, 1)
    _, randomised = next(iter(randomised_models(model, steps, seed=3)))
    drawn = randomised.module.state_dict()["features.4.weight"]
    assert drawn.std().item() == pytest.approx(original.std().item(), rel=0.15)
    assert abs(drawn.mean().item() - original.mean().item()) < 0.2 * original.std().item()


def test_equal_attributions_come_in_a_random_order_and_distinct_ones_highest_first() -> None:
    flat = torch.zeros(1, 8, 8)
    order = pixel_order(flat, torch.Generator().manual_seed(0))[0]
    assert sorted(order.tolist()) == list(range(64))
    assert order[:8].tolist() != list(range(8)), "a flat map is not read in raster order"
    values = torch.randn(1, 8, 8, generator=torch.Generator().manual_seed(1))
    ranked = values.flatten()[pixel_order(values, torch.Generator())[0]]
    assert torch.all(ranked[:-1] >= ranked[1:])


class PixelSum(nn.Module):
    """Class 1's logit is the weighted sum of channel 0; class 0's is 0."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1, bias=False)  # gives the model a first convolution
        self.conv.weight.data.zero_()
        self.conv.weight.data[0, 0] = 1.0
        self.weights = nn.Parameter(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logit = (self.conv(x)[:, 0] * self.weights).sum(dim=(1, 2)) - 2.0
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def test_deletion_and_insertion_curves_follow_the_logit_by_hand() -> None:
    generator = torch.Generator().manual_seed(2)
    weights = torch.rand(16, 16, generator=generator) * 0.05
    model = loaded_model(torchscript_twin(PixelSum(weights), "script", 16))
    settings = ExplainSettings(methods=("saliency",))
    context, _, _ = build_context(model, OutputKind.LOGITS, None, settings, Preprocessing(3))
    image = torch.rand(3, 16, 16, generator=generator)
    faithful = weights * image[0]
    orders = pixel_order(torch.stack([faithful, -faithful]), generator)
    deletion, insertion = curves(context, image, 1, orders, steps=4)

    def probability(x: torch.Tensor) -> float:
        return float(torch.sigmoid((x[0] * weights).sum() - 2.0))

    blur = blurred(image)
    assert not torch.allclose(blur, image)
    for m in range(2):
        for k in range(5):
            top = torch.zeros(256, dtype=torch.bool)
            top[orders[m, : 64 * k]] = True
            top = top.view(16, 16)
            assert deletion[m, k] == pytest.approx(probability(torch.where(top, 0.0, image)))
            assert insertion[m, k] == pytest.approx(probability(torch.where(top, image, blur)))
    assert area(deletion)[0] < area(deletion)[1], "the true ranking deletes faster"
    assert area(insertion)[0] > area(insertion)[1], "and inserts faster"
    assert area(np.array([0.0, 1.0, 1.0])) == pytest.approx(0.75)


def test_localisation_scores_on_hand_made_maps() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    inside = np.zeros((4, 4))
    inside[0, 0], inside[3, 3] = 3.0, 1.0
    outside = -inside
    outside[3, 3] = 2.0
    maps, masks = np.stack([inside, outside]), np.stack([mask, mask])
    assert pointing_hit(maps, masks).tolist() == [1.0, 0.0]
    assert energy_inside(maps, masks) == pytest.approx([0.75, 0.0])
    assert np.isnan(energy_inside(-np.abs(maps[:1]), masks[:1])[0]), "no positive evidence"
    orders = pixel_order(torch.from_numpy(maps), torch.Generator()).numpy()
    # top 2 of 16 pixels: {(0,0), (3,3)} against a 4-pixel mask: 1 / 5
    assert top_iou(orders[:1], masks[:1], 2 / 16) == pytest.approx([0.2])


def test_a_mask_follows_its_images_resizing_and_cropping(tmp_path: Path) -> None:
    square = np.zeros((40, 60), np.uint8)
    square[10:30, 25:45] = 255
    Image.fromarray(square).resize((30, 20), Image.Resampling.NEAREST).save(tmp_path / "m.png")
    preprocessing = Preprocessing(3, image_size=20)
    image = preprocessing.display(Image.fromarray(square).convert("RGB"))
    mask = read_mask(tmp_path / "m.png", (60, 40), preprocessing)
    assert mask.shape == (20, 20)
    square_in_image = image[0] > 0.5  # bilinear, so its border may differ by a pixel
    iou = (mask & square_in_image).sum() / (mask | square_in_image).sum()
    assert iou > 0.8 and 80 <= int(mask.sum()) <= 120


def test_map_instability_ignores_scale_and_measures_the_largest_move() -> None:
    base = np.arange(16, dtype=float).reshape(4, 4)
    assert map_instability(base, np.stack([base * 3, base])) == pytest.approx(0.0)
    moved = base.copy()
    moved[0, 0] = 15.0
    expected = np.linalg.norm((moved - base) / 15) / np.linalg.norm(base / 15)
    assert map_instability(base, np.stack([base, moved])) == pytest.approx(expected)
    assert np.isnan(map_instability(np.zeros((4, 4)), np.stack([base])))


class _Picky(Method):
    """Out of memory above two images per batch, and for any batch holding class 1."""

    key = "picky"
    title = "Picky"
    paper = "nobody, 2026"
    postprocessing = ()
    reading = caveat = implementation = "test only"

    def raw_map(self, batch: Batch, context: ExplainContext) -> torch.Tensor:
        if len(batch.inputs) > 2 or bool((batch.targets == 1).any()):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")
        return batch.display.mean(dim=1)


def test_recomputed_maps_halve_on_out_of_memory_and_an_image_that_never_fits_is_an_error() -> None:
    context = explain_context(
        loaded_model(torchscript_twin(TinyNet(), "script", 8)), OutputKind.LOGITS, None
    )
    display = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([0, 0, 1, 0, 0])
    picky = _Picky(context.settings)
    results = recompute(context, [picky], display, targets, list(range(5)), batch_size=4)["picky"]
    assert results[2] == "CUDA out of memory. Tried to allocate 1 GiB"
    for i in (0, 1, 3, 4):
        np.testing.assert_array_equal(results[i], display[i].mean(dim=0).numpy())


def test_mean_ci_contains_the_mean_and_skips_nan() -> None:
    mean, low, high = mean_ci(np.array([0.1, 0.2, np.nan, 0.3, 0.4]), seed=0)
    assert mean == pytest.approx(0.25) and low < mean < high
    assert mean_ci(np.array([0.5]))[1:] == (0.5, 0.5)
    assert all(np.isnan(mean_ci(np.array([np.nan]))))


def _records(rows: list[tuple[int, str, str, str, float]]) -> pd.DataFrame:
    """Records from ``(index, method, measure, step, value)``."""
    return pd.DataFrame(
        [(i, "predicted", "a", m, measure, step, v, "ok", "") for i, m, measure, step, v in rows],
        columns=list(RECORD_DTYPES),
    ).astype(RECORD_DTYPES)


def test_verdicts_follow_the_stated_criteria() -> None:
    rows = []
    for i in range(10):
        jitter = 0.01 * (i % 3)
        rows += [
            (i, "copycat", "spearman", "all", 0.9 + jitter),
            (i, "good", "spearman", "all", 0.1 + jitter),
            (i, "flat", "spearman", "all", 0.1 + jitter),
            (i, "random", "deletion_auc", "", 0.5),
            (i, "random", "insertion_auc", "", 0.5),
            (i, "good", "deletion_auc", "", 0.2 + jitter),
            (i, "good", "insertion_auc", "", 0.8),
            (i, "copycat", "deletion_auc", "", 0.2),
            (i, "copycat", "insertion_auc", "", 0.8),
            (i, "flat", "deletion_auc", "", 0.5 + (jitter if i % 2 else -jitter)),
            (i, "flat", "insertion_auc", "", 0.5),
            (i, "good", "map_instability", "", 0.9),
            (i, "good", "energy", "", 0.6 + jitter),
            (i, "mask", "mask_area", "", 0.25),
        ]
    verdicts = verdict_table(_records(rows), ("copycat", "good", "flat"), "all", 0.5, 0.5)
    table = verdicts.set_index("method")
    assert table.loc["copycat", "randomisation"] == "fails"
    assert str(table.loc["copycat", "verdict"]).startswith("Do not read its maps")
    assert table.loc["good", "randomisation"] == "passes"
    assert table.loc["good", "faithfulness"] == "better than random"
    # (0.8 - (0.2 + mean jitter 0.009)) - (0.5 - 0.5)
    assert table.loc["good", "faithfulness_gain"] == pytest.approx(0.591)
    assert table.loc["good", "stability"] == "unstable"
    assert table.loc["good", "localisation"] == "localises"
    assert str(table.loc["good", "verdict"]).startswith("Can be read for this model")
    assert "small noise moves its map by 90%" in str(table.loc["good", "verdict"])
    assert table.loc["flat", "faithfulness"] == "not distinguishable from random"
    assert str(table.loc["flat", "verdict"]).startswith("Weak evidence")
    assert table.loc["flat", "stability"] == "not measured"
    missing = verdict_table(_records(rows), ("good",), None, 0.5, 0.5)
    assert missing.loc[0, "randomisation"] == "not measured"


def _group_cases(n: int, label: str, prediction: str, start: int) -> list[GroupCase]:
    mask = np.zeros((48, 48), bool)
    mask[18:30, 18:30] = True
    return [
        GroupCase(Case(start + i, "sampled", "predicted", 0), label, prediction, mask)
        for i in range(n)
    ]


def test_evidence_in_a_corner_is_a_shortcut_and_evidence_on_the_lesion_is_not() -> None:
    rng = np.random.default_rng(0)
    cases = _group_cases(8, "benign", "malignant", 0) + _group_cases(8, "benign", "benign", 100)
    maps = MapStore()
    for case in cases:
        values = rng.random((48, 48)) * 0.05
        if case.prediction == "malignant":
            values[2:9, 2:9] += 1.0  # a corner marker
        else:
            values[20:28, 20:28] += 1.0  # the lesion
        maps.put(case.case, "grad-cam", values)
    found = find_shortcuts(cases, maps, ("grad-cam",))
    groups = {g.name: g for g in found.groups}
    assert set(groups) == {"benign", "malignant", "benign → malignant"}
    corner = groups["malignant"]
    assert corner.flagged and corner.region == "top-left corner"
    assert corner.outside[0] > 0.9 and corner.concentration > 3
    assert "lies outside the region of interest" in corner.sentence()
    assert "top-left corner" in corner.sentence()
    assert groups["benign → malignant"].flagged
    assert not groups["benign"].flagged and groups["benign"].outside[0] < 0.5
    assert [g.name for g in found.flagged] == ["malignant", "benign → malignant"]
    assert find_shortcuts(cases, maps, ()).groups == (), "no trusted method, no finding"


def test_a_method_without_positive_evidence_in_a_group_is_left_out_not_a_crash() -> None:
    # Regression: a group whose maps of a trusted method were all <= 0 raised ValueError
    # (np.stack of no masks) and stopped the whole measure stage.
    cases = _group_cases(4, "benign", "benign", 0)
    maps = MapStore()
    for case in cases:
        maps.put(case.case, "grad-cam", -np.ones((48, 48)))
        lesion = np.zeros((48, 48))
        lesion[20:28, 20:28] = 1.0
        maps.put(case.case, "saliency", lesion)
    assert find_shortcuts(cases, maps, ("grad-cam",)).groups == ()
    (group,) = find_shortcuts(cases, maps, ("grad-cam", "saliency")).groups
    assert group.outside[0] == pytest.approx(0.0) and not group.flagged
    assert set(group.mean_maps) == {"grad-cam", "saliency"}


def test_grid_cells_have_names() -> None:
    names = [region_name(r, c) for r in range(3) for c in range(3)]
    assert names == [
        "top-left corner",
        "top edge",
        "top-right corner",
        "left edge",
        "centre",
        "right edge",
        "bottom-left corner",
        "bottom edge",
        "bottom-right corner",
    ]


class _Darkness(Check):
    """A check made up for the test: the mean of a measure ``dark`` per method."""

    key = "darkness"
    title = "Darkness"
    columns: ClassVar[dict[str, str]] = {"darkness": "float64"}

    def measure_case(
        self,
        run: MapRun,
        case: TrustCase,
        target: str,
        maps: dict[str, np.ndarray],
        records: Records,
    ) -> None:
        for key, values in maps.items():
            records.add(case, target, key, "dark", float((values < 0).mean()))

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        return {"darkness": evidence.values(method, "dark").mean()}

    def describe(self, row: pd.Series) -> str:
        return f"{row['darkness']:.0%}"


def test_a_registered_check_measures_each_case_and_adds_its_columns_to_the_verdicts() -> None:
    check = _Darkness()
    records = Records()
    run = MapRun(context=None, settings=TrustSettings(), masks={}, curves={})  # type: ignore[arg-type]
    for index, share in enumerate((0.25, 0.75)):
        values = np.ones((4, 4), np.float32)
        values.flat[: int(16 * share)] = -1
        case = TrustCase(index, "sampled", "predicted", 0, torch.zeros(3, 4, 4))
        check.measure_case(run, case, "a", {"saliency": values}, records)

    table = verdict_table(records.frame(), ("saliency",), None, 0.5, 0.5, checks=(*CHECKS, check))

    assert list(table.columns) == list(verdict_columns((*CHECKS, check)))
    assert list(table.columns)[-3:] == ["darkness", "verdict", "level"]
    assert table.loc[0, "darkness"] == pytest.approx(0.5)
    assert check.describe(table.iloc[0]) == "50%"


def test_the_registry_gives_trust_csv_its_columns_without_overlap() -> None:
    names = [column for check in CHECKS for column in check.columns]

    assert len(names) == len(set(names))
    protocol = ["protocol_images", "protocol_steps", "protocol_copies"]
    assert list(VERDICT_COLUMNS) == ["method", *names, "verdict", "level", *protocol]
    assert all(check.key in check.columns for check in CHECKS), "each judgement is a column"


def test_a_group_of_too_few_images_is_shown_not_flagged_and_its_interval_is_over_images() -> None:
    # Two images with every map in a corner once made a "finding" with a tight interval
    # computed over their maps; a finding needs shortcut-min-images images.
    cases = _group_cases(2, "benign", "malignant", 0)
    maps = MapStore()
    for i, case in enumerate(cases):
        for method, weight in (("grad-cam", 1.0), ("saliency", 0.5)):
            values = np.zeros((48, 48))
            values[2:9, 2:9] = 1.0  # the corner
            values[20:28, 20:28] = 0.1 * weight * (i + 1)  # the lesion, more in the second
            if (i, method) == (0, "saliency"):
                values = -np.ones((48, 48))  # no positive evidence: this map is left out
            maps.put(case.case, method, values)

    (group, *_) = find_shortcuts(cases, maps, ("grad-cam", "saliency"), min_images=3).groups

    assert group.too_few and not group.flagged and group.n == 2
    corner, lesion = 49.0, 64.0  # pixels of each square
    shares = [[corner / (corner + 0.1 * w * (i + 1) * lesion) for w in (1.0, 0.5)] for i in (0, 1)]
    per_image = [shares[0][0], np.mean(shares[1])]  # image 0 has one usable map, image 1 two
    assert group.outside[0] == pytest.approx(np.mean(per_image)), "images, not maps, averaged"
    (enough, *_) = find_shortcuts(cases, maps, ("grad-cam", "saliency"), min_images=2).groups
    assert enough.flagged and not enough.too_few, "the same evidence, judged with enough images"


def test_region_share_is_each_images_evidence_in_the_named_cell_averaged_over_methods() -> None:
    cases = [c.case for c in _group_cases(2, "benign", "malignant", 0)]
    maps = MapStore()
    corner = np.zeros((48, 48))
    corner[2:9, 2:9] = 1.0
    spread = np.ones((48, 48))
    maps.put(cases[0], "grad-cam", corner)
    maps.put(cases[0], "saliency", spread)
    maps.put(cases[1], "grad-cam", -spread)  # no positive evidence: left out

    shares = region_share(cases, maps, ("grad-cam", "saliency"), "top-left corner")

    assert shares == pytest.approx({0: (1.0 + 1 / 9) / 2}), "16 x 16 of 48 x 48 is a ninth"
