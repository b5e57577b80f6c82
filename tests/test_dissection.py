"""Network dissection on stored activations: the IoU equals a direct computation, a planted
unit is labelled with its concept, random units are not, a saturated unit keeps a mask."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from auditor.concepts import Batch, dissect, dissection, upsampled
from auditor.concepts.blocks import fires_everywhere, geometry
from auditor.concepts.tally import Passes, ranked, scan, tally

SIZE = (16, 16)


def _batches(
    activations: torch.Tensor, concepts: torch.Tensor, annotated: torch.Tensor, size: int = 3
):
    def start() -> Iterator[Batch]:
        for i in range(0, len(activations), size):
            rows = slice(i, i + size)
            yield Batch.of(activations[rows], concepts[rows], annotated[rows])

    return start


def _direct(activations, concepts, annotated, quantile):
    """IoU per unit and concept, computed the obvious way from the whole arrays."""
    up = F.interpolate(activations, size=SIZE, mode="bilinear", align_corners=False).numpy()
    n, units = up.shape[:2]
    k = math.ceil(quantile * n * SIZE[0] * SIZE[1])
    iou = np.zeros((units, concepts.shape[1]))
    for u in range(units):
        threshold = np.sort(up[:, u].ravel())[::-1][k - 1]
        fires = up[:, u] >= threshold
        for c in range(concepts.shape[1]):
            rows = annotated[:, c].numpy()
            mask = concepts[:, c].numpy()[rows]
            inter = (fires[rows] & mask).sum()
            union = (fires[rows] | mask).sum()
            iou[u, c] = inter / union if union else 0.0
    return iou


def _blobs(n: int, rng: np.random.Generator, side: int = 16) -> torch.Tensor:
    """``(n, side, side)`` bool: one random rectangle per image."""
    masks = np.zeros((n, side, side), dtype=bool)
    for mask in masks:
        top, left = rng.integers(0, side - 4, size=2)
        height, width = rng.integers(2, 6, size=2)
        mask[top : top + height, left : left + width] = True
    return torch.from_numpy(masks)


def test_the_iou_equals_a_direct_computation_from_stored_activations_and_masks() -> None:
    rng = np.random.default_rng(0)
    activations = torch.from_numpy(rng.normal(size=(10, 5, 4, 4)).astype(np.float32))
    concepts = torch.stack([_blobs(10, rng), _blobs(10, rng)], dim=1)
    annotated = torch.ones(10, 2, dtype=torch.bool)
    annotated[3, 1] = False  # one image lacks the second concept's mask

    result = dissect(_batches(activations, concepts, annotated), SIZE, quantile=0.05)

    assert result.thresholds.exact.all()
    np.testing.assert_allclose(
        result.iou, _direct(activations, concepts, annotated, 0.05), atol=1e-6
    )


def test_a_planted_unit_is_labelled_with_its_concept_and_random_units_are_not() -> None:
    rng = np.random.default_rng(1)
    n = 60
    concepts = torch.stack([_blobs(n, rng), _blobs(n, rng)], dim=1)
    planted = F.avg_pool2d(concepts[:, 1:2].float(), 4)  # the second concept, at 4x4
    noise = torch.from_numpy(rng.normal(scale=0.01, size=(n, 1, 4, 4)).astype(np.float32))
    random = torch.from_numpy(rng.normal(size=(n, 6, 4, 4)).astype(np.float32))
    activations = torch.cat([planted + noise, random], dim=1)

    result = dissect(
        _batches(activations, concepts, torch.ones(n, 2, dtype=torch.bool), 8), SIZE, 0.005
    )

    labels = result.labels(0.04)
    assert labels[0] == 1 and result.iou[0, 1] > 0.04
    assert (labels[1:] == -1).all() and result.iou[1:].max() < 0.04


def test_the_threshold_is_taken_after_upsampling_not_before() -> None:
    """NetDissect-Lite thresholds the raw maps: a unit that peaks on a small concept then
    has an empty mask after upsampling; here its mask covers the concept."""
    rng = np.random.default_rng(2)
    n = 40
    small = np.zeros((n, 16, 16), dtype=bool)
    small[:, 5:7, 5:7] = True  # a 2x2 concept, inside one 4x4 cell of the unit's map
    concepts = torch.from_numpy(small)[:, None]
    unit = F.avg_pool2d(concepts.float(), 4) + torch.from_numpy(
        rng.normal(scale=0.001, size=(n, 1, 4, 4)).astype(np.float32)
    )

    result = dissect(_batches(unit, concepts, torch.ones(n, 1, dtype=torch.bool)), SIZE, 0.005)

    raw = np.sort(unit.numpy().ravel())[::-1][math.ceil(0.005 * unit.numel()) - 1]
    lite = (upsampled(unit, SIZE).numpy() >= raw).sum()
    assert lite == 0, "the low-resolution threshold lies above every upsampled value"
    assert result.iou[0, 0] > 0.04


def test_a_saturated_unit_keeps_a_mask_and_ties_all_reach_the_threshold() -> None:
    rng = np.random.default_rng(3)
    n = 12
    concepts = _blobs(n, rng)[:, None]
    activations = torch.ones(n, 1, 4, 4)

    result = dissect(
        _batches(activations, concepts, torch.ones(n, 1, dtype=torch.bool)), SIZE, 0.01
    )

    assert result.thresholds.values[0] == 1.0
    share = concepts.float().mean().item()
    assert result.iou[0, 0] == pytest.approx(share), "every pixel is in the unit's mask"


def test_beyond_the_cap_the_threshold_is_marked_approximate_and_close() -> None:
    rng = np.random.default_rng(4)
    activations = torch.from_numpy(rng.normal(size=(10, 3, 4, 4)).astype(np.float32))
    concepts = _blobs(10, rng)[:, None]
    annotated = torch.ones(10, 1, dtype=torch.bool)

    exact = dissect(_batches(activations, concepts, annotated), SIZE, 0.05)
    capped = dissect(_batches(activations, concepts, annotated), SIZE, 0.05, cap=0)

    assert exact.thresholds.exact.all() and not capped.thresholds.exact.any()
    spread = activations.amax((0, 2, 3)) - activations.amin((0, 2, 3))
    gap = np.abs(capped.thresholds.values - exact.thresholds.values)
    assert (gap <= spread.double().numpy() / 2048 + 1e-9).all(), "within one histogram bin"


@pytest.mark.parametrize("n_concepts", [2, 11])  # 11: their bits span two bytes
@pytest.mark.parametrize("block", [1 << 24, 64], ids=["top-k", "histogram"])
@pytest.mark.parametrize("cap", [1 << 23, 40], ids=["records", "tally-pass"])
@pytest.mark.parametrize(
    ("source", "size"), [((4, 3), (15, 13)), ((3, 4), (41, 50)), ((2, 3), (56, 60)),
                         ((6, 6), (4, 5))]
)  # fmt: skip
def test_the_patchwise_pass_equals_the_dense_one_with_ties_flat_patches_and_odd_sizes(
    source: tuple[int, int], size: tuple[int, int], cap: int, block: int, n_concepts: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Thresholds and tallies from upsampling only the blocks that can reach them equal
    those from every upsampled value (:func:`upsampled`), exactly: ReLU zeros (flat
    patches, ties at the threshold), a dead unit, a constant one, non-integer scales,
    sources with more outputs than a sub-block holds (cut into sub-blocks bounded by
    their corner pixels, computed densely), and maps larger than the masks; read from
    the records, and (a cap too small for them) from the boundary bin and a tally pass;
    the bound from each unit's highest sub-blocks, and (a block budget too small for
    them, nor for keeping the blocks between passes) from a histogram of them."""
    monkeypatch.setattr("auditor.concepts.dissection.BLOCK", block)
    rng = np.random.default_rng(6)
    n = 9
    shape = (n, 5, *source)
    activations = torch.relu(torch.from_numpy(rng.normal(size=shape).astype(np.float32)))
    activations[:, 3] = 0  # dead
    activations[:, 4] = 2.5  # constant
    activations[:, 2] = torch.where(activations[:, 2] > 1.5, activations[:, 2], 0)  # sparse
    concepts = torch.from_numpy(rng.uniform(size=(n, n_concepts, *size)) < 0.3)
    annotated = torch.ones(n, n_concepts, dtype=torch.bool)
    annotated[0, 1] = annotated[2, -1] = False

    result = dissect(_batches(activations, concepts, annotated), size, quantile=0.05, cap=cap)

    up = upsampled(activations, size).numpy()
    k = math.ceil(0.05 * n * size[0] * size[1])
    for u in range(5):
        threshold = np.sort(up[:, u].ravel())[::-1][k - 1]
        assert result.thresholds.values[u] == threshold
        fires = up[:, u] >= threshold
        for c in range(n_concepts):
            rows = annotated[:, c].numpy()
            mask = concepts[:, c].flatten(1).numpy()[rows]
            assert result.intersection[u, c] == (fires[rows] & mask).sum()
            assert result.union[u, c] == (fires[rows] | mask).sum()


def test_a_threshold_tied_on_flat_patches_heavier_than_the_cap_is_exact_from_the_records() -> None:
    """The held values fit under the cap, but the bin holding the threshold weighs more
    (flat patches, each held once with its pixels as weight): ranked from what is held,
    exactly, not marked approximate."""
    activations = torch.zeros(9, 1, 4, 4)
    activations[:, 0, :3, :3] = 1.0  # four flat patches of 16 pixels at 1 in every image
    activations[0, 0, 3, 3] = 2.0
    concepts = torch.zeros(9, 1, *SIZE, dtype=torch.bool)
    annotated = torch.ones(9, 1, dtype=torch.bool)

    result = dissect(_batches(activations, concepts, annotated), SIZE, 0.1, cap=100)

    up = upsampled(activations, SIZE).numpy()
    k = math.ceil(0.1 * 9 * SIZE[0] * SIZE[1])
    assert (up > 1).sum() < k <= (up >= 1).sum(), "the threshold is the tie at 1"
    assert result.thresholds.exact.all() and result.thresholds.values[0] == 1.0


def test_units_whose_values_overflow_the_records_together_are_scanned_apart_and_stay_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Five units read as one group whose values do not fit in the records together:
    scanned again in subsets sized by the exact counts of the scan that overflowed (each
    unit's values at or above its floor: as few subsets as fit), none measured
    approximately, every threshold and tally equal to those measured with room for
    all, and the maps read twice (the range and the bound: the blocks are kept)."""
    rng = np.random.default_rng(6)
    n, size = 9, (41, 50)
    activations = torch.relu(torch.from_numpy(rng.normal(size=(n, 5, 3, 4)).astype(np.float32)))
    concepts = torch.from_numpy(rng.uniform(size=(n, 2, *size)) < 0.3)
    annotated = torch.ones(n, 2, dtype=torch.bool)
    roomy = dissect(_batches(activations, concepts, annotated), size, 0.05)
    subsets, bound = dissection._subsets, dissection._bound
    found: list[list[slice]] = []
    counted: list[torch.Tensor] = []
    floors: list[torch.Tensor] = []

    def counting(counts: torch.Tensor, cap: int) -> list[slice]:
        counted.append(counts)
        found.append(subsets(counts, cap))
        return found[-1]

    monkeypatch.setattr(dissection, "_subsets", counting)
    monkeypatch.setattr(dissection, "_bound", lambda *a: floors.append(bound(*a)) or floors[-1])
    monkeypatch.setattr(dissection, "_groups", lambda n, k, cap: [slice(0, n)])
    reads = []

    def batches() -> Iterator[Batch]:
        reads.append(1)
        return _batches(activations, concepts, annotated)()

    apart = dissect(batches, size, 0.05, cap=3 * roomy.thresholds.k)

    assert len(found) == 1 and len(found[0]) > 1 and len(reads) == 2
    grid = geometry((3, 4), size)
    held = torch.zeros(5, dtype=torch.long)  # what a scan with room for all holds
    for values in scan(Passes(_batches(activations, concepts, annotated), grid), grid, floors[0]):
        held += torch.bincount(values.units, minlength=5)
    assert counted[0].tolist() == held.tolist()
    cap, sums = 3 * roomy.thresholds.k, [int(held[units].sum()) for units in found[0]]
    assert all(together <= cap for together in sums)
    after = [int(held[units.start]) for units in found[0][1:]]
    assert all(together + next_ > cap for together, next_ in zip(sums, after, strict=False))
    assert apart.thresholds.exact.all()
    np.testing.assert_array_equal(apart.thresholds.values, roomy.thresholds.values)
    np.testing.assert_array_equal(apart.intersection, roomy.intersection)
    np.testing.assert_array_equal(apart.union, roomy.union)


def test_a_unit_spanning_more_than_float32s_range_keeps_a_finite_threshold_beyond_the_cap() -> None:
    """Values from -2e38 to 2e38 (their range overflows float32) with no room in the
    records: the histogram's bins stay finite, so the threshold is approximate but
    finite and the unit's mask is not empty."""
    activations = torch.tensor([[[[-2e38, 2e38], [1e38, 0.0]]]])
    concepts = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    concepts[0, 0, :4] = True
    annotated = torch.ones(1, 1, dtype=torch.bool)

    exact = dissect(_batches(activations, concepts, annotated), (8, 8), 0.9)
    capped = dissect(_batches(activations, concepts, annotated), (8, 8), 0.9, cap=0)

    assert exact.thresholds.exact.all() and not capped.thresholds.exact.any()
    assert np.isfinite(capped.thresholds.values).all()
    assert capped.thresholds.values[0] <= exact.thresholds.values[0]
    assert capped.intersection[0, 0] >= exact.intersection[0, 0] > 0


@pytest.mark.parametrize("cap", [1 << 23, 40], ids=["records", "tally-pass"])
def test_values_rounded_above_their_sources_are_counted(cap: int) -> None:
    """A bilinear value can round one ulp above its four sources (0.1 upsampled from 3 x
    4 to 41 x 50 gives 0.10000001 next to a 0). When that is the threshold, reached
    elsewhere by a flat image, the pixels rounded up to it are in the unit's mask too:
    the blocks' bounds are widened by the slack where they are compared."""
    size, a = (41, 50), torch.tensor(0.1)
    above = torch.nextafter(a, torch.tensor(1.0))
    activations = torch.full((3, 1, 3, 4), float(a))
    activations[0, 0, 1, 1] = 0.0
    activations[1] = above  # flat: its pixels set the threshold at ``above``
    up = upsampled(activations, size)
    assert (up[0] == above).sum() > 0, "some values round above their sources"
    concepts = torch.ones(3, 1, *size, dtype=torch.bool)
    annotated = torch.ones(3, 1, dtype=torch.bool)

    result = dissect(_batches(activations, concepts, annotated), size, 0.05, cap=cap)

    threshold = torch.tensor(result.thresholds.values[0], dtype=torch.float32)
    assert threshold == above or not result.thresholds.exact[0]  # the cap: the bin's edge
    assert (up >= threshold).sum() == (up >= above).sum() == 2050 + (up[0] == above).sum()
    assert result.intersection[0, 0] == (up >= threshold).sum()


def test_a_unit_fires_everywhere_only_where_every_value_reaches_its_threshold() -> None:
    """Counted from the concepts' areas when every value reaches the threshold (a ReLU
    unit mostly at 0, its threshold 0), not when some values round below their least
    source (0.7 next to 1.4, upsampled from 3 x 4 to 41 x 50: 0.69999999 < 0.7, the
    threshold), nor when a unit's values are negative at a threshold below 0: from the
    records, and by a tally pass at the same thresholds."""
    size = (41, 50)
    rng = np.random.default_rng(9)
    activations = torch.full((4, 3, 3, 4), 0.7)
    activations[0, 0, 1, 1] = 1.4
    activations[:, 1] = torch.from_numpy(rng.normal(-3, 1, size=(4, 3, 4)).astype(np.float32))
    activations[:, 2] = 0.0
    activations[0, 2, 0, 0] = 1.0
    up = upsampled(activations, size)
    assert (up[:, 0] < 0.7).any(), "some values round below their least source"
    concepts = torch.from_numpy(rng.uniform(size=(4, 1, *size)) < 0.5)
    annotated = torch.ones(4, 1, dtype=torch.bool)
    batches = _batches(activations, concepts, annotated)

    result = dissect(batches, size, 0.9)
    thresholds = torch.from_numpy(result.thresholds.values).float()
    low, high = activations.amin((0, 2, 3)), activations.amax((0, 2, 3))
    everywhere = fires_everywhere(thresholds, low, high)
    grid = geometry((3, 4), size)
    passed = tally(Passes(batches, grid), grid, thresholds, 1, everywhere)

    assert thresholds[0] == 0.7 and thresholds[1] < 0 and thresholds[2] == 0
    assert everywhere.tolist() == [False, False, True]
    fires = up >= thresholds[None, :, None]
    inside = (fires & concepts.flatten(2)).sum((0, 2)).numpy()
    either = (fires | concepts.flatten(2)).sum((0, 2)).numpy()
    for intersection, union in [(result.intersection, result.union), passed]:
        np.testing.assert_array_equal(intersection[:, 0], inside)
        np.testing.assert_array_equal(union[:, 0], either)


def test_the_quantile_is_taken_as_written() -> None:
    """0.07 of 100 values is the 7th largest (0.07 * 100 is 7.000000000000001 in
    floating point, whose ceiling would be 8)."""
    activations = torch.arange(100, dtype=torch.float32).view(4, 1, 5, 5)
    concepts = torch.zeros(4, 1, 5, 5, dtype=torch.bool)
    annotated = torch.ones(4, 1, dtype=torch.bool)

    result = dissect(_batches(activations, concepts, annotated), (5, 5), 0.07)

    assert 0.07 * 100 > 7 and result.thresholds.k == 7
    assert result.thresholds.values[0] == 93.0
    from_numpy = dissect(_batches(activations, concepts, annotated), (5, 5), np.float64(0.07))
    assert from_numpy.thresholds.k == 7


def test_batches_without_an_image_are_skipped_and_annotations_are_read_as_bool() -> None:
    """An empty batch among the others changes nothing; annotations given as 0 and 1
    (uint8) are read as bool, and a Batch built with them directly is refused."""
    rng = np.random.default_rng(10)
    activations = torch.from_numpy(rng.normal(size=(6, 2, 3, 3)).astype(np.float32))
    concepts = _blobs(6, rng)[:, None]
    annotated = torch.ones(6, 1, dtype=torch.bool)
    annotated[1] = False
    plain = dissect(_batches(activations, concepts, annotated), SIZE, 0.05)

    def with_an_empty_one() -> Iterator[Batch]:
        yield Batch.of(activations[:0], concepts[:0], annotated[:0])
        yield from _batches(activations, concepts, annotated.to(torch.uint8))()

    result = dissect(with_an_empty_one, SIZE, 0.05)

    np.testing.assert_array_equal(result.thresholds.values, plain.thresholds.values)
    np.testing.assert_array_equal(result.union, plain.union)
    with pytest.raises(TypeError, match="annotations bool"):
        Batch(activations, torch.zeros(6, *SIZE, 1, dtype=torch.uint8), torch.zeros(6, 1),
              annotated.to(torch.uint8))  # fmt: skip


def test_a_unit_with_a_nan_or_an_infinity_has_no_threshold_and_leaves_the_others_alone() -> None:
    rng = np.random.default_rng(7)
    activations = torch.from_numpy(rng.normal(size=(6, 4, 4, 4)).astype(np.float32))
    concepts = _blobs(6, rng)[:, None]
    annotated = torch.ones(6, 1, dtype=torch.bool)
    clean = dissect(_batches(activations, concepts, annotated), SIZE, 0.05)
    broken = activations.clone()
    broken[2, 0, 1, 1] = math.nan
    broken[4, 1, 0, 3] = math.inf

    result = dissect(_batches(broken, concepts, annotated), SIZE, 0.05)

    assert np.isnan(result.thresholds.values[:2]).all() and not result.thresholds.exact[:2].any()
    assert (result.iou[:2] == 0).all() and (result.intersection[:2] == 0).all()
    np.testing.assert_array_equal(result.thresholds.values[2:], clean.thresholds.values[2:])
    np.testing.assert_array_equal(result.iou[2:], clean.iou[2:])


def test_the_weighted_ranking_equals_a_sort() -> None:
    """:func:`ranked` gives each unit's value where the weights from the top reach ``k``,
    as a full sort does: negative values, ties, signed zeros, subnormals, infinities,
    weights, and a unit whose weights never reach ``k`` (NaN)."""
    rng = np.random.default_rng(8)
    units = torch.from_numpy(rng.integers(0, 4, size=300))
    values = torch.from_numpy(rng.normal(size=300).round(1).astype(np.float32))
    special = torch.tensor([0.0, -0.0, 1e-40, -1e-40, math.inf, -math.inf])
    values[::7] = special[torch.from_numpy(rng.integers(0, 6, size=len(values[::7])))]
    weights = torch.from_numpy(rng.integers(1, 5, size=300).astype(np.float64))
    units[units == 3] = 2  # unit 3 has no value at all
    k = 40

    expected = []
    for unit in range(4):
        mine = units == unit
        order = torch.argsort(-values[mine].double(), stable=True)
        reach = weights[mine][order].cumsum(0)
        at = torch.nonzero(reach >= k)
        expected.append(float(values[mine][order][at[0]]) if len(at) else -math.inf)
    rank = torch.full((4,), float(k))
    found = ranked(units, values, weights, rank, 4)
    np.testing.assert_array_equal(found[:3], expected[:3])
    assert np.isnan(found[3])
