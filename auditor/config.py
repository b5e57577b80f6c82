"""The audit configuration: defaults < TOML config file < command-line flags.

A config file is flat TOML whose keys are the CLI's long flags without dashes, e.g.::

    model = "model.pt"          # relative paths are relative to the config file
    data = "validation/"
    image-size = 224
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    classes = ["benign", "malignant"]
    target-layer = "layer4"     # only in the file: the layer of the CAM family
    methods = ["saliency", "grad-cam", "occlusion"]   # default: every method
    ig-baseline = "blur"        # black, blur or mean
    ig-steps = 32
    smoothgrad-samples = 16
    smoothgrad-noise = 0.15     # share of the image's value range
    smoothgrad-base = "saliency"
    occlusion-window = 16       # pixels; default 1/8 of the image side
    occlusion-stride = 8        # pixels; default half the window
    superpixels = 50            # SLIC superpixels for LIME and KernelSHAP
    lime-samples = 256
    shap-samples = 256
    token-prefix = 1            # tokens before a transformer's patch grid; default: detected
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from auditor.errors import ConfigError, UsageError

__all__ = ["AuditConfig", "parse_floats", "parse_names", "resolve_config"]

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides what an audit run computes.

    Attributes:
        model: The TorchScript file.
        data: An ImageFolder-style directory or a CSV manifest (``path,label[,mask,...]``).
        out: Folder under which each run writes ``<model-stem>-<UTC timestamp>/``.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``.
        batch_size: Images per forward pass, for evaluation and explanation.
        explain_samples: Up to this many sampled images and this many misclassified ones
            are explained.
        seed: Seed for sampling, bootstrap and profiling inputs.
        image_size: Resize the shorter side to this and centre-crop a square; ``None``
            keeps images as they are (they must then all have one size).
        mean: Per-channel mean subtracted after scaling to [0, 1]; ``None``: none.
        std: Per-channel standard deviation divided by; ``None``: none.
        classes: Class names in the model's output order; ``None``: sorted folder names
            or sorted manifest labels.
        target_layer: Dotted module path for Grad-CAM; ``None`` picks the last module
            whose output is 4-D with a spatial size above 1.
        bootstrap: Number of bootstrap resamples for the 95% confidence intervals.
        workers: Data-loading worker processes (0 decodes in the main process).
        methods: Explanation methods to run (registry keys); ``None``: all of them.
        ig_baseline ... token_prefix: Method settings; see
            :class:`auditor.explain.ExplainSettings`.
        trust_images ... shortcut_concentration: Trust-check settings; see
            :class:`auditor.measure.TrustSettings`.
    """

    model: Path
    data: Path
    out: Path = Path("reports")
    device: str = "auto"
    batch_size: int = 32
    explain_samples: int = 32
    seed: int = 0
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    classes: tuple[str, ...] | None = None
    target_layer: str | None = None
    bootstrap: int = 1000
    workers: int = 0
    methods: tuple[str, ...] | None = None
    ig_baseline: str = "black"
    ig_steps: int = 32
    smoothgrad_samples: int = 16
    smoothgrad_noise: float = 0.15
    smoothgrad_base: str = "saliency"
    occlusion_window: int | None = None
    occlusion_stride: int | None = None
    superpixels: int = 50
    lime_samples: int = 256
    shap_samples: int = 256
    token_prefix: int | None = None
    trust_images: int = 8
    randomisation_steps: int = 4
    deletion_steps: int = 20
    sensitivity_samples: int = 5
    sensitivity_radius: float = 0.02
    localisation_top: float = 0.1
    randomisation_threshold: float = 0.5
    sensitivity_threshold: float = 0.5
    shortcut_threshold: float = 0.5
    shortcut_concentration: float = 2.0
    source: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings as plain values, with where each came from."""
        values = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "source"
        }
        return {
            key: {
                "value": str(v)
                if isinstance(v, Path)
                else (list(v) if isinstance(v, tuple) else v),
                "source": self.source.get(key, "default"),
            }
            for key, v in values.items()
        }


_FIELDS = {f.name for f in dataclasses.fields(AuditConfig)} - {"source"}
_PATH_FIELDS = {"model", "data", "out"}
_INT_FIELDS = {
    "batch_size",
    "explain_samples",
    "seed",
    "image_size",
    "bootstrap",
    "workers",
    "ig_steps",
    "smoothgrad_samples",
    "occlusion_window",
    "occlusion_stride",
    "superpixels",
    "lime_samples",
    "shap_samples",
    "token_prefix",
    "trust_images",
    "randomisation_steps",
    "deletion_steps",
    "sensitivity_samples",
}
_NAME_LISTS = {"methods": "method names", "classes": "names"}  # field → what it lists
_FLOAT_FIELDS = {
    "smoothgrad_noise",
    "sensitivity_radius",
    "localisation_top",
    "randomisation_threshold",
    "sensitivity_threshold",
    "shortcut_threshold",
    "shortcut_concentration",
}


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """Parse ``"0.5,0.5,0.5"`` into floats.

    Raises:
        ConfigError: An item is not a number.
    """
    try:
        return tuple(float(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise ConfigError(
            f"{option} {text!r} is not a comma-separated list of numbers; "
            f"write it like 0.485,0.456,0.406"
        ) from None


def parse_names(text: str) -> tuple[str, ...]:
    """Parse ``"benign,malignant"`` into names, stripping spaces."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _load_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing TOML file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _FIELDS:
            valid = ", ".join(sorted(k.replace("_", "-") for k in _FIELDS))
            raise ConfigError(
                f"config file {str(path)!r} has an unknown key {key!r}; valid keys: {valid}"
            )
        if name in _PATH_FIELDS and isinstance(value, str):
            value = (path.parent / value) if not Path(value).is_absolute() else Path(value)
        values[name] = value
    return values


def _coerce(name: str, value: Any) -> Any:
    """Turn a value from TOML or a flag into the field's type, or raise ConfigError."""
    if value is None:
        return None
    if name in _PATH_FIELDS:
        if not isinstance(value, str | Path):
            raise ConfigError(f"{name} must be a path (a string), got {value!r}")
        return Path(value)
    if name in ("mean", "std"):
        items = parse_floats(value, name) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in items
        ):
            raise ConfigError(f"{name} must be a list of numbers, got {value!r}")
        return tuple(float(v) for v in items)
    if name in _NAME_LISTS:
        items = parse_names(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
            raise ConfigError(f"{name} must be a list of {_NAME_LISTS[name]}, got {value!r}")
        return tuple(items)
    if name in _FLOAT_FIELDS:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{name.replace('_', '-')} must be a number, got {value!r}")
        return float(value)
    if name in _INT_FIELDS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{name.replace('_', '-')} must be an integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{name.replace('_', '-')} must be a string, got {value!r}")
    return value


def _validate(config: AuditConfig) -> None:
    def bad(option: str, message: str) -> ConfigError:
        return ConfigError(f"--{option} {message}")

    if config.batch_size < 1:
        raise bad("batch-size", f"must be at least 1, got {config.batch_size}")
    if config.explain_samples < 0:
        raise bad("explain-samples", f"must be 0 or more, got {config.explain_samples}")
    if config.image_size is not None and config.image_size < 8:
        raise bad("image-size", f"must be at least 8 pixels, got {config.image_size}")
    if config.bootstrap < 100:
        raise bad("bootstrap", f"needs at least 100 resamples, got {config.bootstrap}")
    if config.workers < 0:
        raise bad("workers", f"must be 0 or more, got {config.workers}")
    if not _DEVICE.match(config.device):
        raise bad("device", f"{config.device!r} is not one of auto, cpu, cuda, cuda:N")
    for option, values in (("mean", config.mean), ("std", config.std)):
        if values is not None and len(values) not in (1, 3):
            raise bad(option, f"needs 1 or 3 values (one per channel), got {len(values)}")
    for option, values in (("mean", config.mean), ("std", config.std)):
        if values is not None and not all(math.isfinite(v) for v in values):
            raise bad(option, f"values must be finite numbers, got {list(values)}")
    if config.std is not None and any(v <= 0 for v in config.std):
        raise bad("std", f"values must be positive, got {list(config.std)}")
    if (config.mean is None) != (config.std is None):
        raise ConfigError("--mean and --std go together: give both or neither")
    _validate_methods(config)
    _validate_trust(config)
    if config.classes is not None:
        if len(config.classes) < 2:
            raise bad("classes", f"needs at least two class names, got {list(config.classes)}")
        if len(set(config.classes)) != len(config.classes):
            raise bad("classes", f"has repeated names: {list(config.classes)}")


def _validate_methods(config: AuditConfig) -> None:
    from auditor.explain import METHODS, GradientMethod
    from auditor.explain.base import IG_BASELINES

    def bad(option: str, message: str) -> ConfigError:
        return ConfigError(f"--{option} {message}")

    known = ", ".join(METHODS)
    for key in config.methods or ():
        if key not in METHODS:
            raise bad("methods", f"names an unknown method {key!r}; choose from {known}")
    if config.methods is not None and len(set(config.methods)) != len(config.methods):
        raise bad("methods", f"has repeated names: {list(config.methods)}")
    if config.ig_baseline not in IG_BASELINES:
        raise bad("ig-baseline", f"{config.ig_baseline!r} is not one of {', '.join(IG_BASELINES)}")
    gradient = [k for k, cls in METHODS.items() if issubclass(cls, GradientMethod)]
    if config.smoothgrad_base not in gradient:
        raise bad(
            "smoothgrad-base",
            f"{config.smoothgrad_base!r} is not a gradient method; choose from "
            f"{', '.join(gradient)}",
        )
    for option, value, least in (
        ("ig-steps", config.ig_steps, 2),
        ("smoothgrad-samples", config.smoothgrad_samples, 1),
        ("occlusion-window", config.occlusion_window, 1),
        ("occlusion-stride", config.occlusion_stride, 1),
        ("superpixels", config.superpixels, 2),
        ("lime-samples", config.lime_samples, 10),
        ("shap-samples", config.shap_samples, 10),
        ("token-prefix", config.token_prefix, 0),
    ):
        if value is not None and value < least:
            raise bad(option, f"must be at least {least}, got {value}")
    if not (math.isfinite(config.smoothgrad_noise) and 0 < config.smoothgrad_noise <= 1):
        raise bad("smoothgrad-noise", f"must be in (0, 1], got {config.smoothgrad_noise}")


def _validate_trust(config: AuditConfig) -> None:
    def bad(option: str, message: str) -> ConfigError:
        return ConfigError(f"{option} {message}; set it in the config file")

    for option, value, least in (
        ("trust-images", config.trust_images, 0),
        ("randomisation-steps", config.randomisation_steps, 1),
        ("sensitivity-samples", config.sensitivity_samples, 1),
    ):
        if value < least:
            raise bad(option, f"must be at least {least}, got {value}")
    if config.deletion_steps == 1 or config.deletion_steps < 0:
        raise bad("deletion-steps", f"must be 0 (skip) or at least 2, got {config.deletion_steps}")
    for option, number, low, high in (
        ("sensitivity-radius", config.sensitivity_radius, 0.0, 1.0),
        ("localisation-top", config.localisation_top, 0.0, 1.0),
        ("randomisation-threshold", config.randomisation_threshold, 0.0, 1.0),
        ("sensitivity-threshold", config.sensitivity_threshold, 0.0, math.inf),
        ("shortcut-threshold", config.shortcut_threshold, 0.0, 1.0),
    ):
        if not (low < number <= high):
            raise bad(option, f"must be in ({low:g}, {high:g}], got {number}")
    if not (math.isfinite(config.shortcut_concentration) and config.shortcut_concentration >= 1):
        raise bad(
            "shortcut-concentration", f"must be at least 1, got {config.shortcut_concentration}"
        )


def resolve_config(config_file: Path | None, flags: Mapping[str, Any]) -> AuditConfig:
    """Merge defaults, the config file and the flags that were given, then validate.

    Args:
        config_file: A TOML file, or ``None``.
        flags: Field name to value for the flags given on the command line; ``None``
            values mean "not given".

    Raises:
        ConfigError: An unknown key, a value of the wrong type, or an invalid value.
    """
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    if config_file is not None:
        for key, value in _load_file(config_file).items():
            values[key] = _coerce(key, value)
            source[key] = f"file {config_file.name}"
    for key, value in flags.items():
        if value is not None:
            values[key] = _coerce(key, value)
            source[key] = "command line"
    for required in ("model", "data"):
        if required not in values:
            raise UsageError(f"no {required} given; pass --{required} or set it in --config")
    config = AuditConfig(**values, source=source)
    _validate(config)
    return config
