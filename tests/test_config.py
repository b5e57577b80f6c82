"""Behavioural tests of configuration resolution: defaults < TOML file < flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from auditor.config import AuditConfig, parse_floats, parse_names, resolve_config
from auditor.errors import AuditError, ConfigError

REQUIRED = {"model": "m.pt", "data": "val"}


def _toml(tmp_path: Path, text: str, folder: str = "cfg") -> Path:
    directory = tmp_path / folder
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "audit.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _flags(**extra: Any) -> dict[str, Any]:
    return {**REQUIRED, **extra}


def test_defaults() -> None:
    config = resolve_config(None, _flags())

    assert config == AuditConfig(model=Path("m.pt"), data=Path("val"))
    assert (
        config.out,
        config.device,
        config.batch_size,
        config.explain_samples,
        config.seed,
        config.image_size,
        config.mean,
        config.std,
        config.classes,
        config.explain.target_layer,
        config.evaluation.bootstrap,
        config.workers,
    ) == (Path("reports"), "auto", 32, 32, 0, None, None, None, None, None, 1000, 0)
    assert config.source == {"model": "command line", "data": "command line"}
    assert config.as_dict()["batch_size"] == {"value": 32, "source": "default"}
    assert config.as_dict()["model"] == {"value": "m.pt", "source": "command line"}


def test_none_flags_mean_not_given() -> None:
    config = resolve_config(None, _flags(batch_size=None, device=None, mean=None))

    assert config.batch_size == 32
    assert config.device == "auto"
    assert "batch_size" not in config.source


def test_file_overrides_defaults_and_resolves_relative_paths_against_its_folder(
    tmp_path: Path,
) -> None:
    absolute = tmp_path / "elsewhere" / "val.csv"
    path = _toml(
        tmp_path,
        f"""
model = "models/net.pt"
data = "{absolute.as_posix()}"
out = "../runs"
batch-size = 8
explain-samples = 4
image-size = 224
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 1]
classes = ["benign", "malignant"]
target-layer = "layer4"
device = "cuda:1"
bootstrap = 500
workers = 2
seed = 7
""",
    )

    config = resolve_config(path, {})

    folder = tmp_path / "cfg"
    assert config.model == folder / "models" / "net.pt"
    assert config.data == absolute
    assert config.out == folder / ".." / "runs"
    assert config.batch_size == 8
    assert config.explain_samples == 4
    assert config.image_size == 224
    assert config.mean == (0.485, 0.456, 0.406)
    assert config.std == (0.229, 0.224, 1.0)
    assert all(isinstance(v, float) for v in config.std)
    assert config.classes == ("benign", "malignant")
    assert config.explain.target_layer == "layer4"
    assert config.device == "cuda:1"
    assert (config.evaluation.bootstrap, config.workers, config.seed) == (500, 2, 7)
    assert set(config.source.values()) == {"file audit.toml"}
    assert config.as_dict()["classes"] == {
        "value": ["benign", "malignant"],
        "source": "file audit.toml",
    }


def test_underscore_keys_are_accepted_in_the_file(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\nbatch_size = 4\n')

    assert resolve_config(path, {}).batch_size == 4


def test_flags_override_the_file_and_source_records_each_origin(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'model = "m.pt"\ndata = "d"\nbatch-size = 8\nseed = 3\nmean = [0.5]\nstd = [0.5]\n',
    )

    config = resolve_config(
        path, {"batch_size": 64, "mean": "0.1,0.2,0.3", "std": "1,1,1", "model": "x.pt"}
    )

    assert config.batch_size == 64
    assert config.seed == 3
    assert config.mean == (0.1, 0.2, 0.3)
    assert config.std == (1.0, 1.0, 1.0)
    # A path flag is taken as given (relative to the working directory), not the file's folder.
    assert config.model == Path("x.pt")
    assert config.data == tmp_path / "cfg" / "d"
    assert config.source == {
        "model": "command line",
        "data": "file audit.toml",
        "batch_size": "command line",
        "seed": "file audit.toml",
        "mean": "command line",
        "std": "command line",
    }
    assert config.as_dict()["workers"]["source"] == "default"


def test_classes_flag_is_split_on_commas_and_stripped() -> None:
    config = resolve_config(None, _flags(classes=" benign , malignant,"))

    assert config.classes == ("benign", "malignant")


def test_unknown_key_is_a_config_error_listing_valid_keys(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\nbatchsize = 8\n')

    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})

    message = str(raised.value)
    assert "unknown key 'batchsize'" in message
    valid = (
        "agreement-neighbours, agreement-permutations, artifact-concepts, batch-size, "
        "blur-sigma, bootstrap, brand-css, brightness-factor, classes, compare-alpha, "
        "computed-concepts, concept-dir, concepts, contrast-factor, "
        "counterfactual-fill, counterfactual-images, counterfactual-labels, "
        "counterfactual-passes, "
        "counterfactual-segments, data, deletion-steps, dependence-alpha, "
        "dependence-difference, device, dissection-images, dissection-iou, "
        "dissection-quantile, downscale-factor, drift-permutations, drift-points, "
        "duplicate-distance, embedding-layer, explain-samples, format, fragile-drop, "
        "high-confidence, history, ig-baseline, ig-steps, image-size, "
        "instability-threshold, intersections, jpeg-quality, label-thresholds, lime-samples, "
        "localisation-top, max-groups, max-pixels, maximise-classes, maximise-lr, "
        "maximise-size, maximise-steps, mean, methods, min-group-size, model, "
        "model-name, model-version, neighbours, noise-sigma, occlusion-stride, "
        "occlusion-window, out, output, pass-batches, patient-column, permutations, "
        "positive-class, precision, precision-check, prevalence, randomisation-steps, "
        "randomisation-threshold, report-classes, robustness-images, rotation-degrees, "
        "seed, shap-samples, shortcut-concentration, shortcut-min-images, "
        "shortcut-threshold, smoothgrad-base, smoothgrad-noise, smoothgrad-samples, "
        "stability-radius, stability-samples, std, superpixels, target-layer, "
        "target-sensitivity, target-specificity, tcav-alpha, tcav-images, tcav-pseudo, "
        "tcav-runs, threshold, token-prefix, train-data, trust-budget, trust-images, "
        "tsne-perplexity, tsne-points, wachter-l1, wachter-lr, wachter-steps, "
        "wachter-tv, workers"
    )
    assert f"valid keys: {valid}" in message


def test_source_is_not_a_valid_file_key(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\nsource = "x"\n')

    with pytest.raises(ConfigError, match="unknown key 'source'"):
        resolve_config(path, {})


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("sensitivity-samples", "stability-samples"),
        ("sensitivity-radius", "stability-radius"),
        ("sensitivity-threshold", "instability-threshold"),
    ],
)
@pytest.mark.parametrize("table", ["", "[trust]\n"])
def test_a_renamed_key_is_a_one_line_error_naming_its_new_key(
    tmp_path: Path, old: str, new: str, table: str
) -> None:
    path = _toml(tmp_path, f'model = "m.pt"\ndata = "d"\n{table}{old} = 1\n')

    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})

    message = str(raised.value)
    assert message == f"{old!r} was renamed {new!r}; rename it in config file {str(path)!r}"


def test_missing_and_invalid_toml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(_toml(tmp_path, "model = \n"), {})


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('batch-size = "32"', "batch-size must be an integer, got '32'"),
        ("batch-size = true", "batch-size must be an integer, got True"),
        ("batch-size = 32.0", "batch-size must be an integer, got 32.0"),
        ("seed = false", "seed must be an integer, got False"),
        ("image-size = [224]", "image-size must be an integer, got [224]"),
        ('mean = [0.5, "x", 0.5]', "mean must be a list of numbers"),
        ("std = [true]", "std must be a list of numbers"),
        ("mean = 0.5", "mean must be a list of numbers, got 0.5"),
        ("classes = [1, 2]", "classes must be a list of names"),
        ("device = 0", "device must be a string, got 0"),
        ("target-layer = 4", "target-layer must be a string, got 4"),
    ],
)
def test_wrong_types_in_the_file_are_config_errors(tmp_path: Path, line: str, message: str) -> None:
    path = _toml(tmp_path, f'model = "m.pt"\ndata = "d"\n{line}\n')

    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})

    assert message in str(raised.value)


@pytest.mark.parametrize("value", ["5", "true", '["m.pt"]'])
def test_wrong_type_for_a_path_key_is_a_config_error(tmp_path: Path, value: str) -> None:
    # Bug: _coerce calls Path(value) without a type check, so a non-string path in the
    # TOML file raises TypeError (a traceback) instead of ConfigError.
    path = _toml(tmp_path, f'model = {value}\ndata = "d"\n')

    with pytest.raises(ConfigError, match="model"):
        resolve_config(path, {})


def test_bool_flag_for_an_integer_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="workers must be an integer, got True"):
        resolve_config(None, _flags(workers=True))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be at least 1, got 0"),
        ({"explain_samples": -1}, "--explain-samples must be at least 0, got -1"),
        ({"image_size": 7}, "--image-size must be at least 8 pixels, got 7"),
        ({"bootstrap": 99}, "--bootstrap must be at least 100 resamples, got 99"),
        ({"workers": -1}, "--workers must be at least 0, got -1"),
        ({"device": "gpu"}, "--device 'gpu' is not one of auto, cpu, cuda, cuda:N"),
        ({"device": "cuda:"}, "--device 'cuda:' is not one of auto, cpu, cuda, cuda:N"),
        ({"mean": "0.5,0.5", "std": "1,1"}, "--mean needs 1 or 3 values (one per channel), got 2"),
        ({"mean": "", "std": "1"}, "--mean needs 1 or 3 values (one per channel), got 0"),
        ({"mean": "0.5", "std": "1,1,1,1"}, "--std needs 1 or 3 values (one per channel), got 4"),
        ({"mean": "0,0,0", "std": "1,0,1"}, "--std values must be positive, got [1.0, 0.0, 1.0]"),
        ({"mean": "0", "std": "-1"}, "--std values must be positive, got [-1.0]"),
        ({"mean": "0.5,0.5,0.5"}, "--mean and --std go together: give both or neither"),
        ({"std": "0.5"}, "--mean and --std go together: give both or neither"),
        ({"classes": "a,b,a"}, "--classes has repeated names: ['a', 'b', 'a']"),
        ({"classes": "only"}, "--classes needs at least two class names, got ['only']"),
        ({"classes": ("x",)}, "--classes needs at least two class names, got ['x']"),
    ],
)
def test_invalid_values_are_config_errors(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_config(None, _flags(**flags))

    assert str(raised.value) == message


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_valid_devices_are_accepted(device: str) -> None:
    assert resolve_config(None, _flags(device=device)).device == device


@pytest.mark.parametrize(("mean", "std"), [("0.5", "nan"), ("nan", "0.5"), ("0", "inf")])
def test_non_finite_mean_or_std_is_a_config_error(mean: str, std: str) -> None:
    # Bug: the check `any(v <= 0 for v in std)` is False for NaN, and mean is not checked
    # at all, so --std nan / --mean nan / --std inf pass validation and every normalised
    # input becomes NaN (or 0).
    with pytest.raises(ConfigError):
        resolve_config(None, _flags(mean=mean, std=std))


def test_invalid_value_in_the_file_is_a_config_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\nclasses = ["a"]\n')

    with pytest.raises(ConfigError, match=r"--classes needs at least two class names, got \['a'\]"):
        resolve_config(path, {})


def test_parse_floats() -> None:
    assert parse_floats("0.485, 0.456,0.406", "--mean") == (0.485, 0.456, 0.406)
    assert parse_floats("1,", "--std") == (1.0,)
    assert parse_floats("", "--std") == ()


def test_parse_floats_error_message_names_option_and_value() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_floats("a,b", "--mean")

    assert str(raised.value) == (
        "--mean 'a,b' is not a comma-separated list of numbers; write it like 0.485,0.456,0.406"
    )


def test_unparsable_mean_flag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"'0\.5,x' is not a comma-separated list of numbers"):
        resolve_config(None, _flags(mean="0.5,x", std="1"))


def test_parse_names() -> None:
    assert parse_names(" a, b ,,c ") == ("a", "b", "c")


@pytest.mark.parametrize("missing", ["model", "data"])
def test_missing_model_or_data_is_a_config_error(missing: str) -> None:
    flags = {k: v for k, v in REQUIRED.items() if k != missing}

    with pytest.raises(ConfigError) as raised:
        resolve_config(None, flags)

    assert str(raised.value) == f"no {missing} given; pass --{missing} or set it in --config"


def test_config_error_is_an_audit_error_with_exit_code_one() -> None:
    with pytest.raises(AuditError) as raised:
        resolve_config(None, {"model": "m.pt", "data": "d", "batch_size": 0})

    assert raised.value.exit_code == 1


def test_a_missing_required_option_is_a_usage_error_with_exit_code_two() -> None:
    with pytest.raises(AuditError) as raised:
        resolve_config(None, {"data": "d"})

    assert raised.value.exit_code == 2


def test_method_settings_come_from_the_file_and_methods_from_the_flag(tmp_path: Path) -> None:
    path = _toml(
        tmp_path,
        'model = "m.pt"\ndata = "d"\nmethods = ["cam", "lime"]\nig-baseline = "blur"\n'
        "ig-steps = 8\nsmoothgrad-noise = 0.2\nocclusion-window = 12\ntoken-prefix = 1\n",
    )
    config = resolve_config(path, {"methods": "saliency, grad-cam"})
    assert config.explain.methods == ("saliency", "grad-cam")
    assert config.source["methods"] == "command line"
    explain = config.explain
    assert (explain.ig_baseline, explain.ig_steps, explain.smoothgrad_noise) == ("blur", 8, 0.2)
    assert (explain.occlusion_window, explain.token_prefix) == (12, 1)
    assert resolve_config(path, {}).explain.methods == ("cam", "lime")


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (
            'methods = ["gradcam"]',
            "--methods names an unknown method 'gradcam'; choose from saliency",
        ),
        ('methods = ["cam", "cam"]', "--methods has repeated names"),
        ('ig-baseline = "white"', "--ig-baseline 'white' is not one of black, blur, mean"),
        ('smoothgrad-base = "lime"', "--smoothgrad-base 'lime' is not a gradient method"),
        ("smoothgrad-noise = 0", "--smoothgrad-noise must be in (0, 1]"),
        ("smoothgrad-noise = true", "smoothgrad-noise must be a number"),
        ("ig-steps = 1", "--ig-steps must be at least 2, got 1"),
        ("lime-samples = 5", "--lime-samples must be at least 10"),
        ("occlusion-window = 0", "--occlusion-window must be at least 1"),
        ("token-prefix = -1", "--token-prefix must be at least 0"),
        ("methods = 3", "methods must be a list of method names"),
    ],
)
def test_bad_method_settings_are_one_line_errors(tmp_path: Path, line: str, fragment: str) -> None:
    path = _toml(tmp_path, f'model = "m.pt"\ndata = "d"\n{line}\n')
    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_trust_settings_come_from_the_file_flat_or_in_their_table(tmp_path: Path) -> None:
    flat = _toml(
        tmp_path,
        'model = "m.pt"\ndata = "d"\ntrust-images = 3\nstability-radius = 0.05\n'
        "deletion-steps = 0\nseed = 7\n",
    )
    table = _toml(
        tmp_path,
        'model = "m.pt"\ndata = "d"\nseed = 7\n[trust]\ntrust-images = 3\n'
        "stability-radius = 0.05\ndeletion-steps = 0\n",
        folder="table",
    )
    for path in (flat, table):
        settings = resolve_config(path, {}).trust
        assert (settings.trust_images, settings.stability_radius) == (3, 0.05)
        assert (settings.deletion_steps, settings.seed) == (0, 7)


def test_the_run_seed_reaches_every_stage_and_batch_size_the_evaluation() -> None:
    config = resolve_config(None, _flags(seed=5, batch_size=4, workers=1))

    assert (config.explain.seed, config.trust.seed, config.evaluation.seed) == (5, 5, 5)
    assert (config.evaluation.batch_size, config.evaluation.workers) == (4, 1)


def test_a_key_in_the_wrong_table_is_a_config_error_listing_that_tables_keys(
    tmp_path: Path,
) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\n[trust]\nig-steps = 8\n')

    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})

    message = str(raised.value)
    assert "unknown key 'ig-steps' in [trust]" in message
    assert "valid keys: deletion-steps, instability-threshold, localisation-top" in message


def test_an_empty_method_list_is_a_config_error_not_every_method(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\nmethods = []\n')

    with pytest.raises(ConfigError, match="--methods is empty; name at least one method"):
        resolve_config(path, {})
    with pytest.raises(ConfigError, match="--methods is empty"):
        resolve_config(None, _flags(methods=","))


def test_no_methods_setting_means_every_method_in_registry_order() -> None:
    from auditor.explain import METHODS

    assert resolve_config(None, _flags()).explain.methods == tuple(METHODS)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("trust-images = -1", "trust-images must be at least 0, got -1"),
        ("randomisation-steps = 0", "randomisation-steps must be at least 1"),
        ("deletion-steps = 1", "deletion-steps must be 0 (skip) or at least 2, got 1"),
        ("stability-samples = 0", "stability-samples must be at least 1"),
        ("stability-radius = 0", "stability-radius must be in (0, 1], got 0.0"),
        ("localisation-top = 1.5", "localisation-top must be in (0, 1], got 1.5"),
        ("randomisation-threshold = -0.2", "randomisation-threshold must be in (0, 1]"),
        ("shortcut-concentration = 0.5", "shortcut-concentration must be at least 1"),
    ],
)
def test_bad_trust_settings_are_one_line_errors(tmp_path: Path, line: str, fragment: str) -> None:
    path = _toml(tmp_path, f'model = "m.pt"\ndata = "d"\n{line}\n')
    with pytest.raises(ConfigError) as raised:
        resolve_config(path, {})
    message = str(raised.value)
    assert fragment in message and "set it in the config file" in message and "\n" not in message


def test_a_trust_threshold_of_the_wrong_type_is_a_one_line_error(tmp_path: Path) -> None:
    path = _toml(tmp_path, 'model = "m.pt"\ndata = "d"\ninstability-threshold = "high"\n')
    with pytest.raises(ConfigError, match="instability-threshold must be a number, got 'high'"):
        resolve_config(path, {})
