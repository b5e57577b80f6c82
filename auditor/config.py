"""The audit configuration: defaults < TOML config file < command-line flags.

Every setting is declared once, with its key, bounds, unit and help (see
:mod:`auditor.settings`): the run-level ones here, each stage's in its own settings
dataclass (:class:`~auditor.evaluate.EvaluationSettings`,
:class:`~auditor.explain.ExplainSettings`, :class:`~auditor.measure.TrustSettings`),
nested in :class:`AuditConfig`; ``python -m auditor.config`` prints the README's table.

A config file is TOML whose keys are the settings' keys, flat or in the table of their
stage::

    model = "model.pt"          # relative paths are relative to the config file
    data = "validation/"
    image-size = 224
    mean = [0.485, 0.456, 0.406]
    std = [0.229, 0.224, 0.225]
    classes = ["benign", "malignant"]
    methods = ["saliency", "grad-cam", "occlusion"]   # flat: any stage's key

    [trust]        # or its stage's table: [evaluation], [explain], [trust], [clinical]…
    trust-images = 8
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.clinical.settings import ClinicalSettings
from auditor.concepts.settings import ConceptSettings
from auditor.counterfactual.settings import CounterfactualSettings
from auditor.documentation import Documentation, parse_documentation
from auditor.errors import ConfigError, UsageError
from auditor.evaluate import EvaluationSettings
from auditor.explain import ExplainSettings
from auditor.history.settings import PeriodicSettings
from auditor.images import DEFAULT_MAX_PIXELS
from auditor.measure import TrustSettings
from auditor.multilabel.settings import LabelSettings
from auditor.policy import Criterion, parse_policy
from auditor.robustness import RobustnessSettings
from auditor.settings import (
    SettingSpec,
    coerce,
    declared,
    inherited_fields,
    markdown_table,
    setting,
)
from auditor.similarity.settings import SimilaritySettings

__all__ = ["SETTINGS", "AuditConfig", "parse_floats", "parse_names", "resolve_config"]

_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def _device(value: str) -> str | None:
    return None if _DEVICE.match(value) else f"{value!r} is not one of auto, cpu, cuda, cuda:N"


def _channels(values: tuple[float, ...]) -> str | None:
    if len(values) not in (1, 3):
        return f"needs 1 or 3 values (one per channel), got {len(values)}"
    if not all(math.isfinite(v) for v in values):
        return f"values must be finite numbers, got {list(values)}"
    return None


def _positive(values: tuple[float, ...]) -> str | None:
    problem = _channels(values)
    if problem is None and any(v <= 0 for v in values):
        return f"values must be positive, got {list(values)}"
    return problem


FORMATS = ("html", "pdf", "md")
"""The documents ``format`` chooses from."""


def _stylesheet(path: Path | None) -> str | None:
    """Why ``path`` is not a readable UTF-8 stylesheet (``None`` when it is, or unset)."""
    if path is None:
        return None
    try:
        if "</style" in path.read_text(encoding="utf-8").lower():
            return "holds '</style', which would end the report's stylesheet; remove it"
    except (OSError, UnicodeDecodeError) as error:
        return f"cannot be read as UTF-8 ({error.__class__.__name__}); give a .css file"
    return None


def _formats(names: tuple[str, ...]) -> str | None:
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        return f"needs one or more of {', '.join(FORMATS)}, got {list(names)}"
    return None


def _class_names(names: tuple[str, ...]) -> str | None:
    if len(names) < 2:
        return f"needs at least two class names, got {list(names)}"
    if len(set(names)) != len(names):
        return f"has repeated names: {list(names)}"
    return None


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides what an audit run computes.

    The run-level settings are declared here; each stage's settings are a nested,
    frozen group. ``source`` maps a setting's field name to where its value came from
    (``"command line"``, ``"file audit.toml"``; absent: the default).
    """

    model: Path = setting(help="The TorchScript or torch.export (.pt2) model file", flag=True)
    data: Path = setting(
        help="An ImageFolder-style directory or a CSV manifest (path,label[,mask,...])",
        flag=True,
    )
    out: Path = setting(
        Path("reports"),
        help="Folder under which each run writes <model stem>-<UTC timestamp>/",
        flag=True,
    )
    device: str = setting(
        "auto", help="auto (CUDA when available), cpu, cuda or cuda:N", check=_device, flag=True
    )
    batch_size: int = setting(
        32,
        help="Images per forward pass, for evaluation and explanation",
        minimum=1,
        maximum=4096,
        flag=True,
    )

    explain_samples: int = setting(
        32,
        help="Up to this many sampled and this many misclassified images are explained",
        minimum=0,
        flag=True,
    )
    seed: int = setting(
        0,
        help="Seed for sampling, bootstrap, profiling and every check",
        minimum=0,
        maximum=2**32 - 1,
        flag=True,
    )
    image_size: int | None = setting(
        None,
        help="Resize the shorter side to this and centre-crop a square",
        unit="pixels",
        minimum=8,
        maximum=8192,
        flag=True,
        default_text="images as they are (all of one size)",
    )
    mean: tuple[float, ...] | None = setting(
        None,
        help="Per-channel mean subtracted after scaling to [0, 1], e.g. 0.485,0.456,0.406",
        check=_channels,
        flag=True,
    )
    std: tuple[float, ...] | None = setting(
        None,
        help="Per-channel standard deviation divided by, e.g. 0.229,0.224,0.225",
        check=_positive,
        flag=True,
    )
    classes: tuple[str, ...] | None = setting(
        None,
        help="Class names in the model's output order, e.g. benign,malignant",
        check=_class_names,
        flag=True,
        items="names",
        default_text="sorted folder names or manifest labels",
    )
    workers: int = setting(
        0,
        help="Data-loading worker processes (0 decodes in the main process)",
        minimum=0,
        flag=True,
    )
    max_pixels: int = setting(
        DEFAULT_MAX_PIXELS,
        help="Largest image or mask read (width × height); a larger file is excluded with the "
        "reason (a decompression-bomb guard)",
        unit="pixels",
        minimum=1,
        flag=True,
    )
    report_classes: int = setting(
        20,
        help="Most classes the report lists one by one (per-class table, confusion matrix, "
        "class list); above it the report lists the weakest classes and the most frequent "
        "confusions, and metrics.json keeps every class",
        unit="classes",
        minimum=2,
        maximum=500,
        flag=True,
    )
    format: tuple[str, ...] = setting(
        ("html", "pdf", "md"),
        help="Which documents to write: html (report.html), pdf (report.pdf), md (summary.md); "
        "the data files are always written",
        check=_formats,
        flag=True,
        items="formats",
    )
    patient_column: str | None = setting(
        None,
        help="A metadata column whose value groups images of one patient (or any unit "
        "whose images are not independent): every bootstrap resamples these groups, not "
        "images, and the column is not broken down as a subgroup",
        flag=True,
        default_text="none (images are resampled)",
    )
    brand_css: Path | None = setting(
        None,
        help="A brand stylesheet applied after the report's own (fonts, colours, page "
        "one's head); see templates/report.css for the classes it can restyle",
        check=_stylesheet,
        flag=True,
        default_text="none",
    )
    labels: LabelSettings = field(default_factory=LabelSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    explain: ExplainSettings = field(default_factory=ExplainSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    clinical: ClinicalSettings = field(default_factory=ClinicalSettings)
    robustness: RobustnessSettings = field(default_factory=RobustnessSettings)
    dissection: ConceptSettings = field(default_factory=ConceptSettings)
    similarity: SimilaritySettings = field(default_factory=SimilaritySettings)
    counterfactuals: CounterfactualSettings = field(default_factory=CounterfactualSettings)
    periodic: PeriodicSettings = field(default_factory=PeriodicSettings)
    policy: tuple[Criterion, ...] = ()
    documentation: Documentation = field(default_factory=Documentation)
    source: dict[str, str] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The resolved settings as plain values, with where each came from."""
        result = {}
        for spec in SETTINGS.values():
            value = getattr(getattr(self, spec.group) if spec.group else self, spec.name)
            if isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            result[spec.name] = {"value": value, "source": self.source.get(spec.name, "default")}
        result["documentation"] = {
            "value": self.documentation.as_dict(),
            "source": self.source.get("documentation", "default"),
        }
        result["policy"] = {
            "value": [c.text for c in self.policy],
            "source": self.source.get("policy", "default"),
        }
        return result


SETTINGS: dict[str, SettingSpec] = {spec.name: spec for spec in declared(AuditConfig)}
"""Every setting by field name (unique across the groups)."""

_GROUPS: dict[str, type] = {
    name: hint
    for name, hint in typing.get_type_hints(AuditConfig).items()
    if isinstance(hint, type) and dataclasses.is_dataclass(hint)
}


def parse_floats(text: str, option: str) -> tuple[float, ...]:
    """Parse ``"0.5,0.5,0.5"`` into floats (``option`` names the flag in the error).

    Raises:
        ConfigError: An item is not a number.
    """
    spec = dataclasses.replace(SETTINGS["mean"], name=option.lstrip("-").replace("-", "_"))
    return typing.cast(tuple[float, ...], coerce(spec, text))


def parse_names(text: str) -> tuple[str, ...]:
    """Parse ``"benign,malignant"`` into names, stripping spaces."""
    return typing.cast(tuple[str, ...], coerce(SETTINGS["classes"], text))


_RENAMED: dict[str, str] = {
    "sensitivity-samples": "stability-samples",
    "sensitivity-radius": "stability-radius",
    "sensitivity-threshold": "instability-threshold",
}
"""Old key → new key, for settings renamed since a config file may have been written."""


def _spec(key: str, path: Path, group: str | None = None) -> SettingSpec:
    spec = SETTINGS.get(key.replace("-", "_"))
    renamed = _RENAMED.get(key.replace("_", "-"))
    if spec is None and renamed is not None:
        raise ConfigError(
            f"{key!r} was renamed {renamed!r}; rename it in config file {str(path)!r}"
        )
    if spec is None or (group is not None and spec.group != group):
        valid = ", ".join(
            sorted(s.key for s in SETTINGS.values() if group is None or s.group == group)
        )
        where = f"an unknown key {key!r}" + (f" in [{group}]" if group else "")
        raise ConfigError(f"config file {str(path)!r} has {where}; valid keys: {valid}")
    return spec


def _load_file(path: Path) -> tuple[dict[str, Any], tuple[Criterion, ...], Documentation]:
    """Field name → raw value from a TOML file (paths made relative to its folder), the
    criteria of its ``[policy]`` table and its documentation tables."""
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist; pass an existing TOML file")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None
    entries: list[tuple[SettingSpec, Any]] = []
    table = raw.pop("policy", {})
    if not isinstance(table, dict):
        raise ConfigError(
            f"config file {str(path)!r}: policy must be a table, e.g. [policy] then "
            f'"accuracy.ci_low" = ">= 0.85"'
        )
    policy = parse_policy(table, f"config file {str(path)!r}")
    documentation = parse_documentation(raw, path)
    for key, value in raw.items():
        if key in _GROUPS and isinstance(value, dict):
            entries += [(_spec(k, path, key), v) for k, v in value.items()]
        else:
            entries.append((_spec(key, path), value))
    values: dict[str, Any] = {}
    for spec, value in entries:
        if spec.kind == "path" and isinstance(value, str) and not Path(value).is_absolute():
            value = path.parent / value
        values[spec.name] = value
    return values, policy, documentation


def _build(values: dict[str, Any], source: dict[str, str]) -> AuditConfig:
    run = {name: v for name, v in values.items() if SETTINGS[name].group is None}
    resolved_run = {**{s.name: s.default for s in SETTINGS.values() if s.group is None}, **run}
    groups = {}
    for group, cls in _GROUPS.items():
        own = {name: v for name, v in values.items() if SETTINGS[name].group == group}
        taken = {name: resolved_run[run_name] for name, run_name in inherited_fields(cls).items()}
        groups[group] = cls(**own, **taken)
    return AuditConfig(**run, **groups, source=source)


def resolve_config(config_file: Path | None, flags: Mapping[str, Any]) -> AuditConfig:
    """Merge defaults, the config file and the flags that were given, then validate.

    Args:
        config_file: A TOML file, or ``None``.
        flags: Field name to value for the flags given on the command line; ``None``
            values mean "not given".

    Raises:
        ConfigError: An unknown key, a value of the wrong type, or an invalid value.
        UsageError: No model or no data given.
    """
    given: dict[str, Any] = {}
    source: dict[str, str] = {}
    policy: tuple[Criterion, ...] = ()
    documentation = Documentation()
    if config_file is not None:
        from_file, policy, documentation = _load_file(config_file)
        given |= from_file
        source |= {name: f"file {config_file.name}" for name in from_file}
        if policy:
            source["policy"] = f"file {config_file.name}"
        if documentation.values:
            source["documentation"] = f"file {config_file.name}"
    for name, value in flags.items():
        if value is not None:
            given[name] = value
            source[name] = "command line"
    values = {name: coerce(SETTINGS[name], value) for name, value in given.items()}
    for required in ("model", "data"):
        if required not in values:
            raise UsageError(f"no {required} given; pass --{required} or set it in --config")
    for name, value in values.items():
        SETTINGS[name].validate(value)
    if (values.get("mean") is None) != (values.get("std") is None):
        raise ConfigError("--mean and --std go together: give both or neither")
    return dataclasses.replace(_build(values, source), policy=policy, documentation=documentation)


if __name__ == "__main__":  # pragma: no cover - a developer's tool
    print(markdown_table(AuditConfig))
