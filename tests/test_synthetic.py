"""Behavioural tests of the synthetic dermoscopy-like data set generator."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from auditor.synthetic import (
    CLASSES,
    IMAGE_SIZE,
    MANIFEST_COLUMNS,
    SITES,
    SyntheticImage,
    generate,
    write_dataset,
)

N_RATES = 400


@pytest.fixture(scope="module")
def train() -> list[SyntheticImage]:
    return list(generate("train", N_RATES, seed=0))


@pytest.fixture(scope="module")
def val() -> list[SyntheticImage]:
    return list(generate("val", N_RATES, seed=0))


def _same(a: SyntheticImage, b: SyntheticImage) -> bool:
    return (
        a.image.tobytes() == b.image.tobytes()
        and a.mask.tobytes() == b.mask.tobytes()
        and (a.label, a.site, a.sex, a.age, a.marker) == (b.label, b.site, b.sex, b.age, b.marker)
    )


def _marker_pixels(image: np.ndarray) -> int:
    """Number of strongly blue/purple pixels in the top-left 10x10 corner."""
    corner = image[:10, :10].astype(int)
    r, g, b = corner[..., 0], corner[..., 1], corner[..., 2]
    return int(((b > r + 40) & (b > g + 60)).sum())


def test_same_seed_gives_identical_images() -> None:
    first = list(generate("train", 6, seed=3))
    second = list(generate("train", 6, seed=3))
    assert all(_same(a, b) for a, b in zip(first, second, strict=True))


def test_seed_and_split_change_the_images() -> None:
    base = list(generate("train", 6, seed=0))
    other_seed = list(generate("train", 6, seed=1))
    other_split = list(generate("val", 6, seed=0))
    assert not any(_same(a, b) for a, b in zip(base, other_seed, strict=True))
    assert not any(_same(a, b) for a, b in zip(base, other_split, strict=True))


def test_image_i_does_not_depend_on_n() -> None:
    short = list(generate("val", 3, seed=5))
    long = list(generate("val", 8, seed=5))
    assert all(_same(a, b) for a, b in zip(short, long[:3], strict=True))


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="split"):
        generate("test", 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n must"):
        generate("train", -1)
    with pytest.raises(ValueError, match="seed"):
        generate("train", 1, seed=-2)


def test_types_shapes_and_metadata(train: list[SyntheticImage]) -> None:
    for s in train:
        assert s.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and s.image.dtype == np.uint8
        assert s.mask.shape == (IMAGE_SIZE, IMAGE_SIZE) and s.mask.dtype == np.bool_
        assert s.label in CLASSES
        assert s.site in SITES
        assert s.sex in ("female", "male")
        assert 20 <= s.age <= 85
    for values in (
        {s.label for s in train},
        {s.site for s in train},
        {s.sex for s in train},
    ):
        assert len(values) > 1
    labels = [s.label for s in train]
    assert 0.4 < labels.count("malignant") / len(labels) < 0.6


@pytest.mark.parametrize(
    ("split", "expected"),
    [("train", {"benign": 0.10, "malignant": 0.85}), ("val", {"benign": 0.5, "malignant": 0.5})],
)
def test_marker_rates_per_class(
    split: str, expected: dict[str, float], train: list[SyntheticImage], val: list[SyntheticImage]
) -> None:
    samples = train if split == "train" else val
    for label, rate in expected.items():
        flags = [s.marker for s in samples if s.label == label]
        assert abs(np.mean(flags) - rate) < 0.08, (split, label, np.mean(flags))


def test_marker_flag_matches_the_pixels(val: list[SyntheticImage]) -> None:
    for s in val[:100]:
        if s.marker:
            assert _marker_pixels(s.image) >= 20
            assert s.marker_mask.sum() >= 20 and not s.marker_mask[12:].any()
            assert not s.marker_mask[:, 12:].any(), "the marker is in the top-left corner"
        else:
            assert _marker_pixels(s.image) == 0 and not s.marker_mask.any()


def test_mask_is_a_lesion_that_differs_from_the_skin(train: list[SyntheticImage]) -> None:
    darker = 0
    for s in train:
        area = int(s.mask.sum())
        assert 40 < area < IMAGE_SIZE * IMAGE_SIZE // 2
        assert s.mask[IMAGE_SIZE // 2 - 8 : IMAGE_SIZE // 2 + 8, IMAGE_SIZE // 2 - 8 :].any()
        assert not s.mask[:10, :10].any()  # the marker corner stays clear of the lesion
        grey = s.image.astype(float).mean(axis=2)
        darker += grey[s.mask].mean() < grey[~s.mask].mean() - 15
    assert darker / len(train) > 0.95


def test_malignant_lesions_are_larger_and_more_varied(train: list[SyntheticImage]) -> None:
    def stats(label: str) -> tuple[float, float]:
        chosen = [s for s in train if s.label == label]
        area = np.mean([s.mask.sum() for s in chosen])
        spread = np.mean([s.image[s.mask].astype(float).std(axis=0).mean() for s in chosen])
        return float(area), float(spread)

    benign_area, benign_spread = stats("benign")
    malignant_area, malignant_spread = stats("malignant")
    assert malignant_area > 1.3 * benign_area
    assert malignant_spread > 1.5 * benign_spread


def _read_manifest(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == MANIFEST_COLUMNS
        return list(reader)


def test_write_dataset_writes_a_consistent_manifest(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    manifest = write_dataset(folder, "val", 6, seed=2)
    assert manifest == folder / "manifest.csv"
    rows = _read_manifest(manifest)
    samples = list(generate("val", 6, seed=2))
    assert len(rows) == len(samples)
    for row, s in zip(rows, samples, strict=True):
        assert "\\" not in row["path"] and not Path(row["path"]).is_absolute()
        with Image.open(folder / row["path"]) as im:
            assert im.mode == "RGB"
            assert np.array_equal(np.asarray(im), s.image)
        with Image.open(folder / row["mask"]) as im:
            assert im.mode == "L"
            mask = np.asarray(im)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, s.mask)
        assert row["label"] == s.label and row["site"] == s.site and row["sex"] == s.sex
        assert int(row["age"]) == s.age
        assert row["marker"] == str(s.marker)
        if s.marker:
            with Image.open(folder / row["marker_mask"]) as im:
                assert np.array_equal(np.asarray(im) == 255, s.marker_mask)
        else:
            assert row["marker_mask"] == ""


def test_write_dataset_is_idempotent(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path, "train", 4, seed=1)
    image = tmp_path / _read_manifest(manifest)[0]["path"]
    before = (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns)
    assert write_dataset(tmp_path, "train", 4, seed=1) == manifest
    assert (manifest.stat().st_mtime_ns, image.stat().st_mtime_ns) == before

    # A different request rewrites the data set.
    write_dataset(tmp_path, "train", 5, seed=1)
    assert len(_read_manifest(manifest)) == 5


def test_write_dataset_redoes_an_interrupted_write(tmp_path: Path) -> None:
    manifest = write_dataset(tmp_path, "val", 3)
    for stamp in tmp_path.glob(".*stamp*"):
        stamp.unlink()
    manifest.write_text("path,label\n", encoding="utf-8")
    write_dataset(tmp_path, "val", 3)
    assert len(_read_manifest(manifest)) == 3
