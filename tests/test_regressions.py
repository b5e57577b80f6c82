"""One regression test per bug found in review (models, data and report edge cases)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from auditor.aggregate.figures import confusion_figure
from auditor.config import resolve_config
from auditor.data import discover
from auditor.errors import DataError, ModelError
from auditor.explain.engine import _cases
from auditor.images import Preprocessing, decode_image, expected_size, make_loader
from auditor.load import (
    OutputKind,
    check_output,
    detect_output_kind,
    target_scores,
    to_probabilities,
)
from auditor.measure.map_checks import load_masks
from auditor.measure.records import TrustCase
from auditor.select import Selection
from tests.helpers import (
    TinyNet,
    invoke,
    one_line_error,
    save_torchscript,
    write_manifest,
    write_png,
)


class Brightness(nn.Module):
    """One output: sigmoid of the mean brightness, so bright images are class 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(40 * (x.mean(dim=(1, 2, 3)) - 0.5)).unsqueeze(1)


def two_tone_folder(root: Path, n: int = 4) -> Path:
    for name, level in (("dark", 40), ("bright", 215)):
        for i in range(n):
            (root / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((16, 16, 3), level + i, np.uint8)).save(
                root / name / f"{i}.png"
            )
    return root


def test_a_sigmoid_head_is_read_as_a_probability_not_squashed_twice(tmp_path: Path) -> None:
    model = save_torchscript(Brightness(), tmp_path / "sigmoid.pt")
    data = two_tone_folder(tmp_path / "data")
    result = invoke(
        "run",
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(tmp_path / "r"),
        "--classes",
        "dark,bright",
        "--explain-samples",
        "1",
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((Path(result.stdout.splitlines()[-1]) / "metrics.json").read_text())
    assert metrics["output_kind"] == "binary_probability"
    assert metrics["accuracy"]["value"] == 1.0


def test_binary_probability_reading_and_targets() -> None:
    p = torch.tensor([[0.2], [0.9]])
    assert detect_output_kind(p, ("a", "b"), "m") is OutputKind.BINARY_PROBABILITY
    torch.testing.assert_close(
        to_probabilities(p, OutputKind.BINARY_PROBABILITY), torch.tensor([[0.8, 0.2], [0.1, 0.9]])
    )
    torch.testing.assert_close(
        target_scores(p, OutputKind.BINARY_PROBABILITY, torch.tensor([0, 1])),
        torch.tensor([0.8, 0.9]),
    )
    with pytest.raises(ModelError, match=r"outside \[0, 1\]"):
        check_output(torch.tensor([[0.5], [3.0]]), OutputKind.BINARY_PROBABILITY, 2, 2, "m")


def test_a_squeezed_output_on_a_batch_of_one_is_a_one_line_error(tmp_path: Path) -> None:
    class Squeezed(TinyNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.pool(self.features(x)).flatten(1)).squeeze()

    model = save_torchscript(Squeezed(), tmp_path / "squeezed.pt")
    data = two_tone_folder(tmp_path / "data", n=2)
    result = invoke("run", "--model", str(model), "--data", str(data), "--batch-size", "1")
    one_line_error(result, "returned (2,) for a batch of 1 images")


def test_non_finite_outputs_exclude_the_image_with_a_reason() -> None:
    output = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [float("inf"), 1.0]])
    assert check_output(output, OutputKind.LOGITS, 2, 3, "m").tolist() == [True, False, False]


def test_a_forward_failure_is_a_one_line_error_with_a_hint(tmp_path: Path) -> None:
    class Fixed64(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.fc = nn.Linear(2 * 62 * 62, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x).flatten(1))

    model = save_torchscript(Fixed64(), tmp_path / "fixed.pt")
    data = two_tone_folder(tmp_path / "data", n=1)
    result = invoke("run", "--model", str(model), "--data", str(data))
    one_line_error(result, "--image-size")
    one_line_error(
        invoke("profile", "--model", str(model), "--image-size", "32"),
        "failed on a 1x3x32x32 input",
        "pass the image size and channels the model was trained with",
    )


class _NotOne(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            raise RuntimeError("batch of one not supported")
        return self.net(x)


def test_a_model_refusing_a_batch_of_one_is_told_so_not_sent_to_the_image_size(
    tmp_path: Path,
) -> None:
    """The profile's first pass is one image: a model that runs a batch of two but not
    one (a fixed or minimum batch size) gets a hint about the batch, not the input size."""
    model = save_torchscript(_NotOne(), tmp_path / "m.pt")
    one_line_error(
        invoke("profile", "--model", str(model), "--image-size", "32"),
        "'m.pt' failed on a 1x3x32x32 input (",
        "RuntimeError: batch of one not supported)",
        "it runs a batch of two: Auditor runs batches of any size, one included",
    )


def test_metadata_columns_may_not_reuse_prediction_columns(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 1)
    for column in ("prediction", "sha256", "p_a"):
        manifest = write_manifest(
            tmp_path,
            [
                {"path": "a.png", "label": "a", column: "x"},
                {"path": "a.png", "label": "a", column: "y"},
            ],
        )
        with pytest.raises(DataError, match=f"column named '{column}'"):
            discover(manifest, ("a", "b"))


def test_a_folder_holding_a_manifest_asks_for_the_manifest(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "a.png", 1)
    write_png(tmp_path / "masks" / "a.png", 2)
    write_manifest(tmp_path, [{"path": "images/a.png", "label": "a"}])
    with pytest.raises(DataError, match=r"pass the CSV file itself"):
        discover(tmp_path)


def test_the_most_common_size_wins_not_the_first(tmp_path: Path) -> None:
    write_png(tmp_path / "a" / "0_big.png", 1, size=12)
    for i in range(1, 4):
        write_png(tmp_path / "a" / f"{i}.png", i, size=8)
    write_png(tmp_path / "b" / "x.png", 9, size=8)
    dataset = discover(tmp_path)
    assert expected_size(dataset.samples, Preprocessing(channels=3)) == (8, 8)


def test_integer_labels_sort_as_numbers(tmp_path: Path) -> None:
    rows = []
    for label in ("10", "2", "0", "1"):
        write_png(tmp_path / f"{label}.png", int(label))
        rows.append({"path": f"{label}.png", "label": label})
    assert discover(write_manifest(tmp_path, rows)).classes == ("0", "1", "2", "10")


def test_duplicate_manifest_rows_are_excluded_and_conflicts_refused(tmp_path: Path) -> None:
    write_png(tmp_path / "my images" / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    rows = [
        {"path": "my images/a.png", "label": "x"},
        {"path": "./my images/a.png", "label": "x"},
        {"path": "b.png", "label": "y"},
    ]
    dataset = discover(write_manifest(tmp_path, rows))
    assert len(dataset.samples) == 2
    assert [(e.relpath, e.reason) for e in dataset.excluded] == [
        ("./my images/a.png", "duplicate of row 2")
    ]
    rows[1]["label"] = "y"
    with pytest.raises(DataError, match="rows 2 and 3 with different labels"):
        discover(write_manifest(tmp_path, rows))


def test_missing_mask_files_are_reported_not_claimed(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    dataset = discover(
        write_manifest(
            tmp_path,
            [
                {"path": "a.png", "label": "x", "mask": "nope.png"},
                {"path": "b.png", "label": "y", "mask": ""},
            ],
        )
    )
    assert dataset.missing_masks == ("nope.png",) and not dataset.has_masks


def test_floating_point_images_are_refused_with_a_reason() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4), 0.5, np.float32), "F").save(buffer, format="TIFF")
    with pytest.raises(OSError, match="floating-point image"):
        decode_image(buffer.getvalue())


def test_an_image_both_misclassified_and_sampled_is_explained_once() -> None:
    predictions = pd.DataFrame(
        {
            "index": [0, 1],
            "label": ["a", "b"],
            "prediction": ["b", "b"],
            "correct": [False, True],
            "confidence": [0.9, 0.8],
        }
    )
    cases = _cases(
        Selection(sampled=(0, 1), misclassified=(0,), n_errors=1), predictions, ("a", "b")
    )
    assert [(c.index, c.group, c.role) for c in cases] == [
        (0, "misclassified", "predicted"),
        (0, "misclassified", "true"),
        (1, "sampled", "predicted"),
    ]


def test_the_confusion_figure_stays_small_for_a_thousand_classes() -> None:
    matrix = np.random.default_rng(0).integers(0, 5, (1000, 1000))
    uri = confusion_figure(matrix, [str(i) for i in range(1000)])
    assert uri.startswith("data:image/png;base64,") and len(uri) < 200_000


def test_errors_not_shown_are_not_denied(tmp_path: Path, tiny_model: Path, manifest: Path) -> None:
    result = invoke(
        "run",
        "--model",
        str(tiny_model),
        "--data",
        str(manifest),
        "--out",
        str(tmp_path),
        "--explain-samples",
        "0",
    )
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.splitlines()[-1])
    metrics = json.loads((folder / "metrics.json").read_text())
    html = (folder / "report.html").read_text()
    errors = sum(c["images"] for c in metrics["confusion"] if c["true"] != c["predicted"])
    assert errors > 0
    assert "made no errors" not in html and "--explain-samples is 0" in html
    assert "so no explanation method was checked" in html
    assert "Agreement between methods" not in html, "no figure of nothing"


def test_an_image_gone_before_explanation_becomes_failed_rows(
    tmp_path: Path, tiny_model: Path
) -> None:
    from auditor.explain import ExplainSettings
    from auditor.explain.engine import explain_cases
    from auditor.load import load_model

    two_tone_folder(tmp_path / "data", n=1)
    dataset = discover(tmp_path / "data")
    predictions = pd.DataFrame(
        {
            "index": [0, 1],
            "label": ["bright", "dark"],
            "prediction": ["bright", "bright"],
            "correct": [True, False],
            "confidence": [0.9, 0.8],
        }
    )
    dataset.samples[1].path.unlink()
    explanations = explain_cases(
        load_model(tiny_model, torch.device("cpu")),
        dataset,
        Preprocessing(channels=3),
        predictions,
        Selection(sampled=(0,), misclassified=(1,), n_errors=1),
        OutputKind.LOGITS,
        "features",
        ExplainSettings(methods=("saliency", "grad-cam", "occlusion")),
        4,
    )
    records = explanations.records
    assert len(records) == 3 * 3, "one predicted and one true case for image 1, one for image 0"
    assert set(records.loc[records["index"] == 1, "status"]) == {"failed"}
    assert "No such file" in records.loc[records["index"] == 1, "detail"].iloc[0]
    assert set(records.loc[records["index"] == 0, "status"]) == {"ok"}


# Issue 10: bad input is one `Error:` line or an exclusion with its reason, never a hang.


def test_a_fifo_and_a_dead_link_in_a_class_folder_are_excluded_with_the_reason(
    tmp_path: Path, tiny_model: Path
) -> None:
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(tmp_path / "data" / name / f"{i}.png", seed=10 * k + i)
    os.mkfifo(tmp_path / "data" / "a" / "pipe.png")  # reading it would block for ever
    (tmp_path / "data" / "b" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(tmp_path / "data" / "stray")

    dataset = discover(tmp_path / "data")

    assert sorted((e.relpath, e.reason) for e in dataset.excluded) == [
        ("a/pipe.png", "not a regular file"),
        ("b/gone.png", "broken link"),
        ("stray", "not a regular file"),
    ]
    assert len(dataset.samples) == 4


def test_a_fifo_listed_in_a_manifest_is_excluded_not_read(tmp_path: Path) -> None:
    write_png(tmp_path / "ok.png", seed=1)
    write_png(tmp_path / "ok2.png", seed=2)
    os.mkfifo(tmp_path / "pipe.png")
    manifest = write_manifest(
        tmp_path,
        [
            {"path": "ok.png", "label": "a"},
            {"path": "ok2.png", "label": "b"},
            {"path": "pipe.png", "label": "a"},
        ],
    )

    dataset = discover(manifest)

    assert [(e.relpath, e.reason) for e in dataset.excluded] == [("pipe.png", "not a regular file")]


@pytest.mark.parametrize(
    ("flag", "value", "fragment"),
    [
        ("--data", "/dev/null", "is neither a folder nor a regular file"),
        ("--data", "", "data is empty; pass a path"),
        ("--model", "/dev/null", "is not a regular file"),
    ],
)
def test_device_files_and_empty_paths_are_one_line_errors(
    flag: str, value: str, fragment: str, tiny_model: Path, manifest: Path, tmp_path: Path
) -> None:
    paths = {"--model": str(tiny_model), "--data": str(manifest), flag: value}
    result = invoke("run", *(x for item in paths.items() for x in item), "--out", str(tmp_path))

    one_line_error(result, fragment)


_UNDER_A_LIMIT = """
import resource, signal, sys
resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
from auditor.cli import main
for line in sys.stdin.read().split("\\n"):
    if line.startswith("file-size-limit\\t"):  # the disk "fills" from here on
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails with EFBIG
        limit = int(line.split("\\t")[1])
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        continue
    sys.argv = ["auditor", *line.split("\\t")]
    try:
        main()
    except SystemExit as end:
        print("exit", end.code, flush=True)
        print("--", file=sys.stderr, flush=True)
"""


def test_the_dangerous_inputs_end_cleanly_under_an_address_space_limit(tmp_path: Path) -> None:
    # Each once took the machine down or allocated gigabytes: /dev/zero as the model was
    # read until the OOM killer came, a 60,000-pixel image size or a huge batch was
    # allocated, a 65535 x 65535 PNG decoded, 10,000 classes made a 763 MiB confusion
    # matrix. They run in one process under an 8 GiB address-space limit, so that a
    # regression fails this test instead of the machine. Last, the disk "fills" (no file
    # may grow past 256 KiB) while the 10,000-class run writes its files.
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(tmp_path / "data" / name / f"{i}.png", seed=10 * k + i)
    _png_claiming(tmp_path / "data" / "a" / "bomb.png", 65535, 65535)
    model = save_torchscript(TinyNet(outputs=10_000), tmp_path / "wide.pt")
    names = ",".join(["a", "b"] + [f"c{k}" for k in range(2, 10_000)])
    data, out, full = (str(tmp_path / name) for name in ("data", "out", "full"))
    runs = [
        ["run", "--model", "/dev/zero", "--data", data, "--out", out],
        ["run", "--model", str(model), "--data", data, "--image-size", "60000"],
        ["run", "--model", str(model), "--data", data, "--batch-size", "1000000000"],
        ["run", "--model", str(model), "--data", data, "--out", out, "--classes", names,
         "--methods", "saliency", "--explain-samples", "1", "--device", "cpu"],
        ["file-size-limit", str(256 << 10)],
        ["run", "--model", str(model), "--data", data, "--out", full, "--classes", names,
         "--methods", "saliency", "--explain-samples", "1", "--device", "cpu"],
    ]  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-c", _UNDER_A_LIMIT],
        input="\n".join("\t".join(run) for run in runs),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert [line for line in done.stdout.splitlines() if line.startswith("exit")] == [
        "exit 1", "exit 1", "exit 1", "exit 0", "exit 1",
    ], done.stderr[-2000:]  # fmt: skip
    errors, run = [], []  # the Error: lines of each run (stderr, "--" after each run)
    for line in done.stderr.splitlines():
        if line == "--":
            errors.append(run[0] if run else "")
            run = []
        elif line.startswith("Error:"):
            run.append(line)
    assert errors[0] == (
        "Error: model path '/dev/zero' is not a regular file (a device, FIFO or socket); "
        "pass a TorchScript or .pt2 file"
    )
    assert errors[1].startswith("Error: --image-size must be at most 8,192"), errors[1]
    assert errors[2].startswith("Error: --batch-size must be at most 4,096"), errors[2]
    assert errors[4] == (
        f"Error: writing the run folder in {full!r} failed (File too large); nothing was "
        f"kept; check free space and permissions, then run again"
    )
    assert list(Path(full).iterdir()) == [], "no partial folder is left"
    printed = done.stdout.splitlines()
    folder = Path(printed[printed.index("exit 0") - 1])
    excluded = pd.read_csv(folder / "excluded.csv")
    assert excluded["path"].tolist() == ["a/bomb.png"]
    assert "65535" in excluded["reason"].iloc[0].replace(",", "")
    assert len(json.loads((folder / "metrics.json").read_text())["per_class"]) == 10_000


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` (its pixel data is a 2x2 image's)."""
    buffer = io.BytesIO()
    Image.new("RGB", (2, 2)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    header = data[12:29]  # b"IHDR" + width, height, depth, colour, compression...
    header[4:12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[12:29] = header
    data[29:33] = zlib.crc32(bytes(header)).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def test_a_decompression_bomb_is_excluded_with_the_reason_not_a_traceback(tmp_path: Path) -> None:
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", seed=10 * k + i)
    _png_claiming(tmp_path / "a" / "bomb.png", 65535, 65535)
    dataset = discover(tmp_path)
    preprocessing = Preprocessing(3)

    assert expected_size(dataset.samples, preprocessing) == (32, 32), "the bomb's header is skipped"
    batches = list(make_loader(dataset.samples, preprocessing, batch_size=8))
    (failure,) = [f for b in batches for f in b.failures]
    assert dataset.samples[failure[0]].relpath == "a/bomb.png"
    assert "65535x65535 (4,294,836,225 pixels), above max-pixels (100,000,000)" in failure[1]


def test_max_pixels_is_the_limit_and_a_setting(tmp_path: Path) -> None:
    raw = (write_png(tmp_path / "x.png", seed=1)).read_bytes()

    assert decode_image(raw, max_pixels=32 * 32).size == (32, 32)
    with pytest.raises(OSError, match=r"32x32 \(1,024 pixels\), above max-pixels \(1,023\)"):
        decode_image(raw, max_pixels=32 * 32 - 1)
    assert resolve_config(None, {"model": "m", "data": "d", "max_pixels": 5}).max_pixels == 5


def test_a_bomb_or_misshapen_mask_leaves_localisation_not_measured_with_the_reason(
    tmp_path: Path,
) -> None:
    image = write_png(tmp_path / "i.png", seed=1)
    bomb = _png_claiming(tmp_path / "bomb.png", 40000, 40000)
    wide = tmp_path / "wide.png"
    Image.new("L", (64, 16), 255).save(wide)
    half = tmp_path / "half.png"
    Image.new("L", (16, 16), 255).save(half)
    cases = [TrustCase(i, "sampled", "predicted", 0, torch.zeros(3, 32, 32)) for i in range(3)]
    paths = {0: (image, bomb), 1: (image, wide), 2: (image, half)}

    masks = load_masks(cases, paths, Preprocessing(3))

    assert "above max-pixels" in str(masks[0])
    assert "the mask is 64x16 but its image is 32x32" in str(masks[1])
    assert isinstance(masks[2], np.ndarray) and masks[2].all(), "same shape, half size: scaled"


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--seed", "99999999999999999999999", "--seed must be at most 4,294,967,295"),
        ("--seed", "-1", "--seed must be at least 0, got -1"),
        ("--image-size", "60000", "--image-size must be at most 8,192 pixels, got 60000"),
        ("--batch-size", "1000000000", "--batch-size must be at most 4,096, got 1000000000"),
    ],
)
def test_out_of_range_numbers_are_refused_before_anything_is_allocated(
    flag: str, value: str, message: str, tiny_model: Path, manifest: Path
) -> None:
    result = invoke("run", "--model", str(tiny_model), "--data", str(manifest), flag, value)

    one_line_error(result, message)


def test_a_nul_byte_in_a_manifest_path_is_a_one_line_error(tmp_path: Path) -> None:
    write_png(tmp_path / "a.png", seed=1)
    manifest = write_manifest(
        tmp_path, [{"path": "a.png", "label": "x"}, {"path": "b\x00.png", "label": "y"}]
    )

    with pytest.raises(DataError, match=re.escape("row 3: path 'b\\x00.png' contains a NUL byte")):
        discover(manifest)


def test_a_file_name_that_is_not_utf8_is_excluded_and_shown_readably(tmp_path: Path) -> None:
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", seed=10 * k + i)
    odd = os.fsdecode(b"\xff\xfe.png")  # undecodable bytes, as the file system hands them over
    write_png(tmp_path / "a" / odd, seed=5)

    dataset = discover(tmp_path)

    (exclusion,) = dataset.excluded
    assert exclusion.relpath == "a/\ufffd\ufffd.png"
    assert exclusion.relpath.encode("utf-8"), "writable to CSV, HTML and PDF"
    assert exclusion.reason == "its file name is not valid UTF-8; rename it"
    assert len(dataset.samples) == 4


def test_class_names_are_drawn_literally_not_as_tex() -> None:
    uri = confusion_figure(np.eye(2, dtype=np.int64), ("$\\frac{x_{$", "b$"))

    assert uri.startswith("data:image/png;base64,")


class _NaNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyNet()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * float("nan")


class _Refuses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.conv(x).mean(dim=(2, 3))
        if bool(scores.sum() != 12345.0):
            raise RuntimeError("the model refuses this input")
        return scores


@pytest.mark.parametrize(
    ("module", "fragments"),
    [
        (_NaNNet, ("'model.pt' gave no finite score", "for any of the 12 images it ran on")),
        (_Refuses, ("'model.pt' failed on a", "RuntimeError: the model refuses this input")),
    ],
)
def test_a_model_that_only_gives_nan_or_raises_inside_torchscript_is_one_line(
    module: type[nn.Module], fragments: tuple[str, ...], tmp_path: Path, manifest: Path
) -> None:
    path = tmp_path / "model.pt"
    torch.jit.script(module().eval()).save(str(path))

    result = invoke("run", "--model", str(path), "--data", str(manifest), "--out", str(tmp_path))

    one_line_error(result, *fragments)


@pytest.mark.parametrize("column", ["site", "label"])
def test_a_column_named_twice_in_a_manifest_is_a_one_line_error(
    tmp_path: Path, column: str
) -> None:
    write_png(tmp_path / "a.png", seed=1)
    header = "path,label,site" + f",{column}"
    (tmp_path / "m.csv").write_text(f"{header}\na.png,x,A,B\n", encoding="utf-8")

    with pytest.raises(DataError, match=f"has the column '{column}' 2 times"):
        discover(tmp_path / "m.csv")


def test_manifest_columns_without_a_name_are_dropped_when_empty_refused_when_not(
    tmp_path: Path,
) -> None:
    """A spreadsheet's trailing commas make columns with empty header cells: empty, they
    are not metadata (a metadata column named '' would be a blank header in
    predictions.csv); holding a value, they are a one-line error that names the cell."""
    for name in ("a", "b"):
        write_png(tmp_path / f"{name}.png", seed=1)
    (tmp_path / "m.csv").write_text("path,label,site,,\na.png,x,A,,\nb.png,y,B,,\n")

    dataset = discover(tmp_path / "m.csv")

    assert dataset.metadata_columns == ("site",)
    assert [s.metadata for s in dataset.samples] == [(("site", "A"),), (("site", "B"),)]
    (tmp_path / "m.csv").write_text("path,label,site,\na.png,x,A,\nb.png,y,B,7\n")
    with pytest.raises(DataError) as raised:
        discover(tmp_path / "m.csv")
    assert str(raised.value) == (
        "m.csv column 4 has no name in the header but row 3 holds '7' in it; name the "
        "column or remove it"
    )


def test_links_out_of_a_class_folder_directory_are_excluded_as_in_a_manifest(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(root / name / f"{i}.png", seed=10 * k + i)
    outside = tmp_path / "elsewhere"
    write_png(outside / "secret.png", seed=9)
    (root / "a" / "link.png").symlink_to(outside / "secret.png")
    (root / "c").symlink_to(outside, target_is_directory=True)

    dataset = discover(root)

    assert sorted((e.relpath, e.reason) for e in dataset.excluded) == [
        (
            "a/link.png",
            "a link to a place outside the data folder (as in a manifest, not followed)",
        ),
        ("c", "a link to a place outside the data folder (as in a manifest, not followed)"),
    ]
    assert dataset.classes == ("a", "b")
    assert all(s.path.resolve().is_relative_to(root.resolve()) for s in dataset.samples)


def test_colour_modes_without_a_direct_conversion_are_read_through_rgb_or_refused(
    tmp_path: Path,
) -> None:
    """A LAB TIFF has no direct conversion to grayscale in PIL (it ended a grayscale
    model's run with a traceback): it is read through RGB. A mode PIL converts to neither
    (premultiplied La) is refused with the reason, which makes an exclusion."""
    for k, name in enumerate(["a", "b"]):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", seed=10 * k + i, mode="L")
    lab = Image.new("LAB", (32, 32), (50, 10, 10))
    lab.save(tmp_path / "a" / "lab.tif")
    dataset = discover(tmp_path)

    batches = list(make_loader(dataset.samples, Preprocessing(1), batch_size=8))

    assert not [f for b in batches for f in b.failures]
    (row,) = [i for i, s in enumerate(dataset.samples) if s.relpath == "a/lab.tif"]
    image = torch.cat([b.images for b in batches])[torch.cat([b.indices for b in batches]) == row]
    grey = np.asarray(lab.convert("RGB").convert("L"), np.float32) / 255
    np.testing.assert_allclose(image[0, 0].numpy(), grey)
    with pytest.raises(OSError, match=r"^colour mode La cannot be converted to L; save the"):
        Preprocessing(1).display(Image.new("La", (4, 4)))


def test_an_elongated_image_has_only_its_centre_square_resized(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 1 x 60,000 strip at 64 px would be resized whole to 64 x 3,840,000 pixels before
    the crop (a 254-byte PNG taking gigabytes at 224 px): the resized whole is never
    larger than max-pixels; and the centre square resized alone samples the same
    positions as the whole resized and cropped (within one grey level)."""
    asked: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recorded(image: Image.Image, size: tuple[int, int], *args: object, **kw: object) -> Any:
        asked.append(size)
        return resize(image, size, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recorded)
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 256, (1, 60_000), np.uint8))
    assert Preprocessing(1, 64).resize_crop(strip, Image.Resampling.BILINEAR).size == (64, 64)
    assert asked == [(64, 64)]

    rng = np.random.default_rng(1)
    wide = Image.fromarray(rng.integers(0, 256, (30, 700, 3), np.uint8).repeat(3, 0), "RGB")
    for size in (24, 64, 200):  # down- and upsampling, odd offsets
        bilinear = Image.Resampling.BILINEAR
        whole = np.asarray(Preprocessing(3, size).resize_crop(wide, bilinear), np.int16)
        alone = Preprocessing(3, size, max_pixels=size * size).resize_crop(wide, bilinear)
        square = np.asarray(alone, np.int16)
        assert whole.shape == square.shape == (size, size, 3)
        assert np.abs(whole - square).max() <= 1, size
