"""Behavioural tests of the data side of the load stage: discovery, preprocessing, loading."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from auditor.data import Exclusion, Sample, discover
from auditor.errors import DataError
from auditor.images import Batch, Preprocessing, make_loader


def _png(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (H, W) or (H, W, 3) uint8 as a PNG, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path, format="PNG")
    return path


def _solid(path: Path, value: int = 128, size: tuple[int, int] = (4, 4)) -> Path:
    """A ``width x height`` RGB PNG of one grey value."""
    width, height = size
    return _png(path, np.full((height, width, 3), value, dtype=np.uint8))


def _noise_png_bytes(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _batches(
    samples: tuple[Sample, ...], preprocessing: Preprocessing, batch_size: int = 16
) -> list[Batch]:
    return list(make_loader(samples, preprocessing, batch_size=batch_size))


# --------------------------------------------------------------------------- folder layout


def test_folder_classes_are_sorted_folder_names_and_images_found_at_any_depth(
    tmp_path: Path,
) -> None:
    _solid(tmp_path / "zebra" / "z1.png")
    _solid(tmp_path / "apple" / "b.png")
    _solid(tmp_path / "apple" / "nested" / "deeper" / "c.PNG")
    _solid(tmp_path / "mango" / "m.jpg.png")

    dataset = discover(tmp_path)

    assert dataset.layout == "folder"
    assert dataset.root == tmp_path
    assert dataset.source == tmp_path
    assert dataset.classes == ("apple", "mango", "zebra")
    assert [(s.index, s.relpath, s.label) for s in dataset.samples] == [
        (0, "apple/b.png", 0),
        (1, "apple/nested/deeper/c.PNG", 0),
        (2, "mango/m.jpg.png", 1),
        (3, "zebra/z1.png", 2),
    ]
    assert dataset.samples[3].path == tmp_path / "zebra" / "z1.png"
    assert all(s.mask is None and s.metadata == () for s in dataset.samples)
    assert dataset.excluded == ()
    assert dataset.metadata_columns == ()
    assert dataset.has_masks is False


def test_folder_classes_override_reorders_labels(tmp_path: Path) -> None:
    _solid(tmp_path / "benign" / "a.png")
    _solid(tmp_path / "malignant" / "b.png")

    default = discover(tmp_path)
    override = discover(tmp_path, ("malignant", "benign"))

    assert [s.label for s in default.samples] == [0, 1]
    assert override.classes == ("malignant", "benign")
    assert [(s.relpath, s.label) for s in override.samples] == [
        ("benign/a.png", 1),
        ("malignant/b.png", 0),
    ]


def test_folder_classes_override_may_name_classes_without_a_folder(tmp_path: Path) -> None:
    _solid(tmp_path / "b" / "x.png")
    _solid(tmp_path / "c" / "y.png")

    dataset = discover(tmp_path, ("a", "b", "c"))

    assert dataset.classes == ("a", "b", "c")
    assert [s.label for s in dataset.samples] == [1, 2]


def test_folder_not_in_classes_override_is_a_data_error_naming_it(tmp_path: Path) -> None:
    _solid(tmp_path / "cat" / "x.png")
    _solid(tmp_path / "dog" / "y.png")

    with pytest.raises(DataError, match=r"'dog'.*not in the class list"):
        discover(tmp_path, ("cat", "bird"))


def test_folder_stray_non_image_and_hidden_files_become_exclusions(tmp_path: Path) -> None:
    _solid(tmp_path / "a" / "one.png")
    _solid(tmp_path / "b" / "two.png")
    (tmp_path / "notes.md").write_text("stray")
    (tmp_path / "a" / "readme.txt").write_text("not an image")
    (tmp_path / "b" / "LICENSE").write_text("no extension")
    # Hidden files and folders, at the root and inside class folders: not read, each
    # named once (a hidden folder with the count of its files), never dropped silently.
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "a" / ".hidden.txt").write_text("x")
    _solid(tmp_path / "a" / ".secret.png")
    _solid(tmp_path / "a" / ".cache" / "thumb.png")
    _solid(tmp_path / "a" / ".cache" / "deep" / "thumb.png")
    _solid(tmp_path / ".ipynb_checkpoints" / "c.png")

    dataset = discover(tmp_path)

    assert dataset.classes == ("a", "b")
    assert [s.relpath for s in dataset.samples] == ["a/one.png", "b/two.png"]
    hidden = "hidden (its name starts with '.'), not read; rename it to audit it"

    def folder(files: int) -> str:
        return (
            f"hidden folder of {files} file(s) (its name starts with '.'), not read; "
            "rename it to audit them"
        )

    assert dataset.excluded == (
        Exclusion(".DS_Store", hidden),
        Exclusion(".ipynb_checkpoints", folder(1)),
        Exclusion("notes.md", "not inside a class folder"),
        Exclusion("a/.cache", folder(2)),
        Exclusion("a/.hidden.txt", hidden),
        Exclusion("a/.secret.png", hidden),
        Exclusion("a/readme.txt", "not an image (.txt)"),
        Exclusion("b/LICENSE", "not an image (no extension)"),
    )


def test_folder_without_class_folders_is_a_data_error(tmp_path: Path) -> None:
    _solid(tmp_path / "loose.png")

    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path)


def test_empty_folder_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no images found"):
        discover(tmp_path)


def test_folder_with_a_single_class_is_a_data_error(tmp_path: Path) -> None:
    _solid(tmp_path / "only" / "a.png")
    _solid(tmp_path / "only" / "b.png")

    with pytest.raises(DataError, match="at least two classes"):
        discover(tmp_path)


def test_class_folders_without_images_are_a_data_error_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")

    with pytest.raises(DataError, match=r"no usable images.*1 files excluded.*not an image"):
        discover(tmp_path)


def test_missing_data_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        discover(tmp_path / "nope")


# --------------------------------------------------------------------------- manifest layout


def _manifest(folder: Path, text: str, name: str = "manifest.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_manifest_resolves_paths_masks_and_keeps_metadata_in_column_order(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _solid(root / "img" / "1.png")
    _solid(root / "img" / "2.png")
    _png(root / "masks" / "1.png", np.zeros((4, 4), dtype=np.uint8))
    manifest = _manifest(
        root,
        "path,site,label,mask,age\nimg/1.png,A,nevus,masks/1.png,40\nimg/2.png, B ,melanoma,,71\n",
    )

    dataset = discover(manifest)

    assert dataset.layout == "manifest"
    assert dataset.root == root
    assert dataset.source == manifest
    assert dataset.classes == ("melanoma", "nevus")
    assert dataset.metadata_columns == ("site", "age")
    first, second = dataset.samples
    assert first == Sample(
        index=0,
        path=(root / "img" / "1.png").resolve(),
        relpath="img/1.png",
        label=1,
        mask=(root / "masks" / "1.png").resolve(),
        metadata=(("site", "A"), ("age", "40")),
    )
    assert second == Sample(
        index=1,
        path=(root / "img" / "2.png").resolve(),
        relpath="img/2.png",
        label=0,
        mask=None,
        metadata=(("site", "B"), ("age", "71")),
    )
    assert dataset.has_masks is True
    assert dataset.excluded == ()


def test_manifest_relative_paths_are_resolved_against_the_manifest_folder_not_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    _solid(root / "a.png")
    _solid(root / "b.png")
    manifest = _manifest(root, "path,label\na.png,x\nb.png,y\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    dataset = discover(manifest)

    assert [s.path for s in dataset.samples] == [
        (root / "a.png").resolve(),
        (root / "b.png").resolve(),
    ]


def test_manifest_classes_override_reorders_labels(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png")
    _solid(tmp_path / "b.png")
    manifest = _manifest(tmp_path, "path,label\na.png,x\nb.png,y\n")

    dataset = discover(manifest, ("y", "x", "z"))

    assert [s.label for s in dataset.samples] == [1, 0]


def test_manifest_path_leaving_the_folder_is_a_data_error_naming_the_row(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _solid(root / "ok.png")
    _solid(tmp_path / "outside.png")
    manifest = _manifest(root, "path,label\nok.png,a\n../outside.png,b\n")

    with pytest.raises(DataError, match=r"manifest\.csv row 3: path '\.\./outside\.png' leaves"):
        discover(manifest)


def test_manifest_absolute_path_is_a_data_error_even_inside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _solid(root / "ok.png")
    inside = _solid(root / "abs.png").resolve()
    manifest = _manifest(root, f"path,label\nok.png,a\n{inside},b\n")

    with pytest.raises(DataError, match=r"row 3: path .* leaves the manifest's folder"):
        discover(manifest)


def test_manifest_mask_leaving_the_folder_is_a_data_error_naming_the_row(tmp_path: Path) -> None:
    root = tmp_path / "set"
    _solid(root / "ok.png")
    _solid(root / "ok2.png")
    manifest = _manifest(root, "path,label,mask\nok.png,a,\nok2.png,b,../../m.png\n")

    with pytest.raises(DataError, match=r"row 3: mask '\.\./\.\./m\.png' leaves"):
        discover(manifest)


def test_manifest_label_not_in_classes_is_a_data_error_naming_the_label(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png")
    _solid(tmp_path / "b.png")
    manifest = _manifest(tmp_path, "path,label\na.png,benign\nb.png,weird\n")

    with pytest.raises(
        DataError, match=r"label 'weird' .*not in the class list \(benign, malignant\)"
    ):
        discover(manifest, ("benign", "malignant"))


def test_manifest_without_label_column_is_a_data_error(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png")
    manifest = _manifest(tmp_path, "path,class\na.png,x\n")

    with pytest.raises(DataError, match=r"no 'label' column \(columns: path, class\)"):
        discover(manifest)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("path,label\n", r"manifest\.csv lists no images"),
        ("", r"manifest\.csv has no 'path' column \(columns: none\)"),
    ],
    ids=["header-only", "zero-bytes"],
)
def test_empty_manifest_is_a_data_error(tmp_path: Path, text: str, message: str) -> None:
    manifest = _manifest(tmp_path, text)

    with pytest.raises(DataError, match=message):
        discover(manifest)


def test_manifest_missing_file_and_missing_label_become_exclusions(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png")
    _solid(tmp_path / "c.png")
    _solid(tmp_path / "d.png")
    manifest = _manifest(tmp_path, "path,label\na.png,x\nmissing.png,y\nc.png,y\nd.png,\n")

    dataset = discover(manifest)

    assert dataset.classes == ("x", "y")
    assert [(s.index, s.relpath, s.label) for s in dataset.samples] == [
        (0, "a.png", 0),
        (1, "c.png", 1),
    ]
    assert dataset.excluded == (
        Exclusion("missing.png", "file not found"),
        Exclusion("d.png", "row 5 has no label"),
    )


def test_manifest_with_a_utf8_bom_and_padded_header_is_read(tmp_path: Path) -> None:
    _solid(tmp_path / "a.png")
    _solid(tmp_path / "b.png")
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("\ufeffpath , label\na.png,x\nb.png,y\n".encode())

    dataset = discover(manifest)

    assert [s.relpath for s in dataset.samples] == ["a.png", "b.png"]


def test_manifest_row_with_more_fields_than_the_header_is_a_data_error(tmp_path: Path) -> None:
    # Bug: csv.DictReader stores surplus fields as a list under the key None, and
    # _discover_manifest calls .strip() on that list -> AttributeError, not DataError.
    _solid(tmp_path / "a.png")
    _solid(tmp_path / "b.png")
    manifest = _manifest(tmp_path, "path,label\na.png,x,surplus\nb.png,y\n")

    with pytest.raises(DataError):
        discover(manifest)


# --------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(("width", "height"), [(40, 20), (20, 40), (10, 10), (7, 9)])
def test_display_resizes_shorter_side_and_crops_a_square(width: int, height: int) -> None:
    image = Image.new("RGB", (width, height), (10, 20, 30))

    tensor = Preprocessing(channels=3, image_size=10).display(image)

    assert tensor.shape == (3, 10, 10)
    assert tensor.dtype == torch.float32
    # A uniform image stays uniform through bilinear resizing.
    expected = torch.tensor([10, 20, 30], dtype=torch.float32).view(3, 1, 1) / 255
    torch.testing.assert_close(tensor, expected.expand(3, 10, 10), atol=1e-6, rtol=0)


def test_display_crop_is_centred() -> None:
    # 30x10 image, image_size 10: no scaling, the crop keeps columns 10..19.
    columns = np.arange(30, dtype=np.uint8) * 8
    image = Image.fromarray(np.tile(columns, (10, 1)), mode="L")

    tensor = Preprocessing(channels=1, image_size=10).display(image)

    assert tensor.shape == (1, 10, 10)
    expected = torch.from_numpy(columns[10:20].astype(np.float32) / 255)
    torch.testing.assert_close(tensor[0, 0], expected, atol=0, rtol=0)
    torch.testing.assert_close(tensor[0, 9], expected, atol=0, rtol=0)


def test_display_without_resize_is_pixels_over_255() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)

    tensor = Preprocessing(channels=3).display(Image.fromarray(pixels))

    assert tensor.shape == (3, 5, 7)
    expected = torch.from_numpy(pixels.astype(np.float32) / 255.0).permute(2, 0, 1)
    torch.testing.assert_close(tensor, expected, atol=0, rtol=0)
    assert float(tensor.min()) >= 0.0
    assert float(tensor.max()) <= 1.0


def test_display_grayscale_with_one_channel() -> None:
    pixels = np.array([[0, 51], [204, 255]], dtype=np.uint8)

    tensor = Preprocessing(channels=1).display(Image.fromarray(pixels, mode="L"))

    assert tensor.shape == (1, 2, 2)
    torch.testing.assert_close(tensor[0], torch.tensor([[0.0, 0.2], [0.8, 1.0]]), atol=1e-7, rtol=0)


def test_display_rgb_image_read_as_one_channel_uses_luma() -> None:
    image = Image.new("RGB", (2, 2), (255, 0, 0))

    tensor = Preprocessing(channels=1).display(image)

    # ITU-R 601-2 luma as PIL computes it: L = R*299/1000 + G*587/1000 + B*114/1000 -> 76.
    assert tensor.shape == (1, 2, 2)
    torch.testing.assert_close(tensor, torch.full((1, 2, 2), 76 / 255), atol=1e-7, rtol=0)


def test_display_grayscale_image_read_as_three_channels_repeats_it() -> None:
    pixels = np.array([[0, 100, 200]], dtype=np.uint8)

    tensor = Preprocessing(channels=3).display(Image.fromarray(pixels, mode="L"))

    assert tensor.shape == (3, 1, 3)
    row = torch.tensor([0, 100, 200], dtype=torch.float32) / 255
    for channel in range(3):
        torch.testing.assert_close(tensor[channel, 0], row, atol=0, rtol=0)


def test_display_rgba_drops_alpha() -> None:
    image = Image.new("RGBA", (3, 2), (30, 60, 90, 0))

    tensor = Preprocessing(channels=3).display(image)

    assert tensor.shape == (3, 2, 3)
    torch.testing.assert_close(
        tensor[:, 0, 0], torch.tensor([30.0, 60.0, 90.0]) / 255, atol=1e-7, rtol=0
    )


def test_display_16_bit_grayscale_is_scaled_not_saturated() -> None:
    # Bug: Image.convert("L") clips 16-bit values at 255, so a 16-bit PNG (common for
    # medical images) becomes almost entirely white (1.0) instead of spanning [0, 1].
    pixels = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    image = Image.fromarray(pixels)
    assert image.mode == "I;16"

    tensor = Preprocessing(channels=1).display(image)

    torch.testing.assert_close(
        tensor[0], torch.tensor([[0.0, 0.25], [0.5, 1.0]]), atol=1 / 255, rtol=0
    )


def test_normalise_subtracts_mean_and_divides_by_std_per_channel() -> None:
    images = torch.tensor([0.0, 0.5, 1.0]).view(3, 1, 1).expand(2, 3, 1, 2).clone()
    preprocessing = Preprocessing(channels=3, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))

    out = preprocessing.normalise(images)

    expected = torch.tensor([-1.0, 1.0, 0.5]).view(3, 1, 1).expand(2, 3, 1, 2)
    assert out.shape == (2, 3, 1, 2)
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=0)


def test_normalise_single_value_applies_to_every_channel() -> None:
    images = torch.full((3, 2, 2), 0.75)

    out = Preprocessing(channels=3, mean=(0.25,), std=(0.5,)).normalise(images)

    torch.testing.assert_close(out, torch.full((3, 2, 2), 1.0), atol=1e-7, rtol=0)


def test_normalise_without_mean_and_std_is_identity() -> None:
    images = torch.rand(2, 3, 4, 4)

    assert torch.equal(Preprocessing(channels=3).normalise(images), images)


# --------------------------------------------------------------------------- loader


@pytest.fixture()
def mixed(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    """Class folders with good, corrupt, truncated and odd-sized PNGs, in a known order."""
    rng = np.random.default_rng(7)
    good_a = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    good_b = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "0_corrupt.png").write_bytes(
        rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    )
    _png(tmp_path / "a" / "1_good.png", good_a)
    _png(tmp_path / "b" / "2_big.png", rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    _png(tmp_path / "b" / "3_good.png", good_b)
    noise = _noise_png_bytes(5, 4, seed=1)
    (tmp_path / "b" / "4_truncated.png").write_bytes(noise[: len(noise) // 2])
    raw = {p.name: p.read_bytes() for p in sorted(tmp_path.rglob("*.png"))}
    return tmp_path, raw


def test_loader_separates_good_images_from_failures_with_reasons(
    mixed: tuple[Path, dict[str, bytes]],
) -> None:
    root, raw = mixed
    dataset = discover(root)
    assert [s.relpath for s in dataset.samples] == [
        "a/0_corrupt.png",
        "a/1_good.png",
        "b/2_big.png",
        "b/3_good.png",
        "b/4_truncated.png",
    ]

    (batch,) = _batches(dataset.samples, Preprocessing(channels=3))

    assert batch.indices.dtype == torch.int64
    assert batch.indices.tolist() == [1, 3]
    assert batch.images.shape == (2, 3, 4, 5)
    for row, name in enumerate(["1_good.png", "3_good.png"]):
        pixels = (
            np.asarray(Image.open(io.BytesIO(raw[name])).convert("RGB"), dtype=np.float32) / 255
        )
        torch.testing.assert_close(
            batch.images[row], torch.from_numpy(pixels).permute(2, 0, 1), atol=0, rtol=0
        )
    assert batch.hashes == tuple(
        hashlib.sha256(raw[n]).hexdigest() for n in ["1_good.png", "3_good.png"]
    )

    reasons = dict(batch.failures)
    assert sorted(reasons) == [0, 2, 4]
    assert reasons[0].startswith("cannot decode image")
    assert reasons[4].startswith("cannot decode image")
    assert "truncated" in reasons[4]
    assert reasons[2] == (
        "image is 6x6 but most images are 5x4; pass --image-size to resize all images"
    )
    # The odd-sized image was read, so its hash is known.
    failure_hashes = dict(zip([i for i, _ in batch.failures], batch.failure_hashes, strict=True))
    assert failure_hashes[2] == hashlib.sha256(raw["2_big.png"]).hexdigest()


def test_loader_keeps_sample_order_across_batches(mixed: tuple[Path, dict[str, bytes]]) -> None:
    root, _ = mixed
    dataset = discover(root)

    batches = _batches(dataset.samples, Preprocessing(channels=3), batch_size=2)

    assert len(batches) == 3
    assert [b.indices.tolist() for b in batches] == [[1], [3], []]
    assert [[i for i, _ in b.failures] for b in batches] == [[0], [2], [4]]
    assert batches[2].images.numel() == 0


def test_loader_with_image_size_resizes_odd_image_instead_of_failing(
    mixed: tuple[Path, dict[str, bytes]],
) -> None:
    root, _ = mixed
    dataset = discover(root)

    (batch,) = _batches(dataset.samples, Preprocessing(channels=3, image_size=8))

    assert batch.indices.tolist() == [1, 2, 3]
    assert batch.images.shape == (3, 3, 8, 8)
    assert sorted(i for i, _ in batch.failures) == [0, 4]


def test_loader_applies_normalisation(tmp_path: Path) -> None:
    _solid(tmp_path / "a" / "x.png", value=51)
    _solid(tmp_path / "b" / "y.png", value=204)
    dataset = discover(tmp_path)

    (batch,) = _batches(dataset.samples, Preprocessing(channels=3, mean=(0.5,), std=(0.5,)))

    torch.testing.assert_close(batch.images[0], torch.full((3, 4, 4), -0.6), atol=1e-6, rtol=0)
    torch.testing.assert_close(batch.images[1], torch.full((3, 4, 4), 0.6), atol=1e-6, rtol=0)


def test_loader_corrupt_file_failure_hash_is_the_file_hash(
    mixed: tuple[Path, dict[str, bytes]],
) -> None:
    # Bug: Batch.failure_hashes is documented as "SHA-256 of the failed files that could be
    # read at all ('' if not)", but read_image hashes only after a successful decode, so a
    # file whose bytes are readable but not decodable gets '' (and data_sha256 then ignores
    # its content).
    root, raw = mixed
    dataset = discover(root)

    (batch,) = _batches(dataset.samples, Preprocessing(channels=3))

    failure_hashes = dict(zip([i for i, _ in batch.failures], batch.failure_hashes, strict=True))
    assert failure_hashes[0] == hashlib.sha256(raw["0_corrupt.png"]).hexdigest()
    assert failure_hashes[4] == hashlib.sha256(raw["4_truncated.png"]).hexdigest()


def test_truncated_images_are_rejected_even_after_weasyprint_is_imported(tmp_path: Path) -> None:
    """Regression: WeasyPrint sets PIL's LOAD_TRUNCATED_IMAGES globally on import."""
    import weasyprint  # noqa: F401
    from PIL import ImageFile

    from auditor.images import read_image

    assert ImageFile.LOAD_TRUNCATED_IMAGES, "the hazard this test guards against"
    noise = _noise_png_bytes(16, 16, seed=3)
    path = tmp_path / "cut.png"
    path.write_bytes(noise[: len(noise) // 2])
    with pytest.raises(OSError, match="cannot decode image"):
        read_image(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES, "the global setting is restored"
