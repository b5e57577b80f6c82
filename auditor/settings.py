"""Declaring a setting once: its TOML key, flag, bounds, unit and help travel with the field.

Each stage owns one frozen settings dataclass (``EvaluationSettings``,
``ExplainSettings``, ``TrustSettings``) whose fields are declared with :func:`setting`;
:class:`auditor.config.AuditConfig` nests them. Everything else is derived from these
declarations: TOML parsing and type coercion, validation with one-line errors, the
``auditor run`` flags, the README's settings table and the report's resolved-config
table. Adding a setting is one :func:`setting` line plus its use.

A field declared with :func:`inherited` is not a key of its own: it takes the value of
the run-level setting of that name (the run's seed, batch size, workers).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Any

from auditor.errors import ConfigError

__all__ = [
    "Check",
    "ConfigRow",
    "Setting",
    "SettingSpec",
    "coerce",
    "config_rows",
    "declared",
    "inherited",
    "markdown_table",
    "named_path",
    "setting",
]

Check = Callable[[Any], str | None]
"""A rule beyond type and bounds: the value → what is wrong with it, or ``None``."""


@dataclass(frozen=True)
class Setting:
    """What a field's metadata declares about it.

    Attributes:
        help: One line for users: the flag's help, the README's and the report's tables.
        unit: The value's unit in words (``"pixels"``), or "".
        minimum: Smallest allowed value (inclusive unless ``open_minimum``), or ``None``.
        maximum: Largest allowed value (inclusive), or ``None``.
        open_minimum: Whether ``minimum`` itself is excluded.
        choices: The allowed values of a string setting, or ``()``.
        check: A further rule (see :data:`Check`), or ``None``.
        flag: Whether ``auditor run`` has a ``--key`` flag for it (otherwise it is set in
            the config file only).
        items: What a list setting lists, for its type error (``"method names"``).
        default_text: How to show the default when the value itself says little.
    """

    help: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    choices: tuple[str, ...] = ()
    check: Check | None = None
    flag: bool = False
    items: str = "values"
    default_text: str = ""


_METADATA = "auditor.setting"
_INHERIT = "auditor.inherit"
_REQUIRED: Any = dataclasses.MISSING


def setting(default: Any = _REQUIRED, **declaration: Any) -> Any:
    """A dataclass field declared as a setting (keyword arguments: see :class:`Setting`).

    Tuples are fine as defaults (they are immutable); leave ``default`` out for a
    required setting.
    """
    return field(default=default, metadata={_METADATA: Setting(**declaration)})


def inherited(name: str, default: Any) -> Any:
    """A field that takes the run-level setting ``name`` (declared once, at the run level)."""
    return field(default=default, metadata={_INHERIT: name})


@dataclass(frozen=True)
class SettingSpec:
    """One declared setting, where it lives and what type it has.

    Attributes:
        name: The field name (``ig_steps``); flags and ``source`` use it too.
        group: The nested settings field of :class:`~auditor.config.AuditConfig` that
            holds it (``"explain"``), or ``None`` for a run-level setting.
        kind: Its value type without ``None``: ``int``, ``float``, ``str``, ``Path``,
            ``tuple[float]`` or ``tuple[str]`` (written ``"floats"`` and ``"names"``).
        optional: Whether ``None`` is allowed.
        default: The declared default (``MISSING`` when required).
        setting: The declaration.
    """

    name: str
    group: str | None
    kind: str
    optional: bool
    default: Any
    setting: Setting

    @property
    def key(self) -> str:
        """The TOML key and flag name: ``ig-steps``."""
        return self.name.replace("_", "-")

    def bad(self, message: str) -> ConfigError:
        """A one-line error about this setting's value that says where to change it."""
        if self.setting.flag:
            return ConfigError(f"--{self.key} {message}")
        return ConfigError(f"{self.key} {message}; set it in the config file")

    def validate(self, value: Any) -> None:
        """Check a coerced value against the declared bounds, choices and rule.

        Raises:
            ConfigError: The value breaks one of them.
        """
        if value is None:
            return
        declared = self.setting
        if self.kind in ("int", "float"):
            self._check_bounds(value)
        if declared.choices and value not in declared.choices:
            raise self.bad(f"{value!r} is not one of {', '.join(declared.choices)}")
        problem = declared.check(value) if declared.check else None
        if problem:
            raise self.bad(problem)

    def _check_bounds(self, value: float) -> None:
        low, high, unit = self.setting.minimum, self.setting.maximum, self.setting.unit
        if self.kind == "float" and not math.isfinite(value) and high != math.inf:
            raise self.bad(f"must be a finite number, got {value}")
        if self.setting.open_minimum:
            if not (low is not None and high is not None and low < value <= high):
                raise self.bad(f"must be in ({low:g}, {high:g}], got {value}")
            return
        unit = f" {unit}" if unit else ""
        if low is not None and value < low:
            raise self.bad(f"must be at least {self._number(low)}{unit}, got {value}")
        if high is not None and value > high:
            raise self.bad(f"must be at most {self._number(high)}{unit}, got {value}")

    def _number(self, bound: float) -> str:
        """A bound as messages write it: ``4,096`` for whole-number settings, else ``0.5``."""
        return f"{int(bound):,}" if self.kind == "int" else f"{bound:g}"


_KINDS: dict[object, str] = {
    int: "int",
    float: "float",
    str: "str",
    Path: "path",
    tuple[float, ...]: "floats",
    tuple[str, ...]: "names",
}


def _kind(annotation: Any) -> tuple[str, bool]:
    options = typing.get_args(annotation) if isinstance(annotation, UnionType) else (annotation,)
    present = [option for option in options if option is not type(None)]
    if len(present) != 1 or present[0] not in _KINDS:
        raise TypeError(f"unsupported setting type {annotation!r}")
    return _KINDS[present[0]], len(present) < len(options)


def declared(cls: type, group: str | None = None) -> Iterator[SettingSpec]:
    """Every setting of a settings dataclass, nested groups included, in field order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        annotation = hints[f.name]
        if dataclasses.is_dataclass(annotation):
            yield from declared(annotation, f.name)  # type: ignore[arg-type]
        elif _METADATA in f.metadata:
            kind, optional = _kind(annotation)
            yield SettingSpec(f.name, group, kind, optional, f.default, f.metadata[_METADATA])


def inherited_fields(cls: type) -> dict[str, str]:
    """Field name → the run-level setting it takes, for a settings dataclass."""
    return {f.name: f.metadata[_INHERIT] for f in dataclasses.fields(cls) if _INHERIT in f.metadata}


def _numbers(value: Any, spec: SettingSpec) -> tuple[float, ...]:
    if isinstance(value, str):
        try:
            return tuple(float(item) for item in value.split(",") if item.strip())
        except ValueError:
            raise ConfigError(
                f"--{spec.key} {value!r} is not a comma-separated list of numbers; "
                f"write it like 0.485,0.456,0.406"
            ) from None
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in value
    ):
        raise ConfigError(f"{spec.key} must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _names(value: Any, spec: SettingSpec) -> tuple[str, ...]:
    items = (
        tuple(item.strip() for item in value.split(",") if item.strip())
        if isinstance(value, str)
        else value
    )
    if not isinstance(items, list | tuple) or not all(isinstance(v, str) for v in items):
        raise ConfigError(f"{spec.key} must be a list of {spec.setting.items}, got {value!r}")
    return tuple(items)


def coerce(spec: SettingSpec, value: Any) -> Any:
    """Turn a value from TOML or a flag into the setting's type.

    Lists may be given as comma-separated strings (``"0.5,0.5,0.5"``, ``"a, b"``).

    Raises:
        ConfigError: The value has the wrong type.
    """
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if spec.kind == "path":
        if not isinstance(value, str | Path):
            raise ConfigError(f"{spec.key} must be a path (a string), got {value!r}")
        if not str(value).strip():
            raise ConfigError(f"{spec.key} is empty; pass a path")
        return Path(value)
    if spec.kind == "floats":
        return _numbers(value, spec)
    if spec.kind == "names":
        return _names(value, spec)
    if spec.kind == "float":
        if not number:
            raise ConfigError(f"{spec.key} must be a number, got {value!r}")
        return float(value)
    if spec.kind == "int":
        if not number or isinstance(value, float):
            raise ConfigError(f"{spec.key} must be an integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{spec.key} must be a string, got {value!r}")
    return value


LISTED_ITEMS = 12
"""Items of a list-valued setting (class names) written out in a table; the rest counted."""


def named_path(path: Path) -> str:
    """A local path as a document names it: its folder and file name, never the machine's
    absolute location (``/home/a/data/val/manifest.csv`` → ``val/manifest.csv``)."""
    parts = Path(path).parts
    return "/".join(p for p in parts[-2:] if p not in ("/", "")) or str(path)


def display(value: Any) -> str:
    """A setting's value as the tables show it ("" for none); a list of more than
    :data:`LISTED_ITEMS` items shows its first ones and its length."""
    if value is None or value is dataclasses.MISSING:
        return ""
    if isinstance(value, tuple):
        items = [f"{v:g}" if isinstance(v, float) else str(v) for v in value]
        if len(items) > LISTED_ITEMS:
            return ", ".join(items[: LISTED_ITEMS - 2]) + f", … ({len(items):,} in all)"
        return ", ".join(items)
    if isinstance(value, Path):
        return named_path(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class ConfigRow:
    """One line of the report's resolved-configuration table."""

    key: str
    value: str
    unit: str
    source: str
    help: str


def config_rows(config: Any) -> tuple[ConfigRow, ...]:
    """Every setting of a resolved config: its value, unit and where the value came from."""
    rows = []
    for spec in declared(type(config)):
        holder = getattr(config, spec.group) if spec.group else config
        rows.append(
            ConfigRow(
                key=spec.key,
                value=display(getattr(holder, spec.name)),
                unit=spec.setting.unit,
                source=config.source.get(spec.name, "default"),
                help=spec.setting.help,
            )
        )
    return tuple(rows)


def markdown_table(cls: type) -> str:
    """The README's settings table: key, flag, default, unit, meaning."""
    lines = [
        "| key | flag | default | unit | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for spec in declared(cls):
        declared_ = spec.setting
        if spec.default is dataclasses.MISSING:
            default = "required"
        else:
            default = declared_.default_text or display(spec.default) or "none"
        flag = f"`--{spec.key}`" if declared_.flag else "file only"
        section = f" (`[{spec.group}]`)" if spec.group else ""
        lines.append(
            f"| `{spec.key}`{section} | {flag} | {default} | {declared_.unit} | {declared_.help} |"
        )
    return "\n".join(lines)
