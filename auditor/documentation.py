"""Declared context: what the model is for, what the data are, and the document's control.

Four optional tables of the audit config, named so that none can be mistaken for the
``model`` and ``data`` paths: ``[model-details]``, ``[intended-use]``, ``[data-details]``
and ``[document]``. Their fields follow Model Cards (Mitchell et al., 2019: model
details, intended use, evaluation data), Datasheets for Datasets (Gebru et al., 2021:
composition, collection, labelling) and the Model Card Toolkit's schema where they fit.
Every value is text or a list of texts. What is not declared is listed in the report as
a documentation gap, never left out silently.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditor.errors import ConfigError
from auditor.settings import named_path

__all__ = ["TABLES", "Declared", "Documentation", "Gap", "parse_documentation"]


@dataclass(frozen=True)
class Declared:
    """One field of a documentation table: its key, its label in the report, what it asks."""

    key: str
    label: str
    asks: str


TABLES: dict[str, tuple[Declared, ...]] = {
    "model-details": (
        Declared("name", "Model name", "the model's name as its users know it"),
        Declared("version", "Version", "the version audited"),
        Declared("owner", "Owner", "who is responsible for the model"),
        Declared("description", "Description", "what the model does, in a sentence"),
        Declared("training-date", "Training date", "when it was trained"),
        Declared("training-data", "Training data", "what it was trained on"),
        Declared("previous-version", "Previous version", "the version it replaces, if any"),
    ),
    "intended-use": (
        Declared("purpose", "Purpose", "the clinical question the model answers"),
        Declared("users", "Intended users", "who reads its output"),
        Declared("population", "Population", "the patients it is meant for"),
        Declared("setting", "Setting", "where it is used (screening, clinic, second reader)"),
        Declared("out-of-scope", "Out-of-scope uses", "uses it must not be put to"),
        Declared("clinical-role", "Clinical role", "what a clinician does with its output"),
    ),
    "data-details": (
        Declared("name", "Data set", "the validation set's name"),
        Declared("description", "Description", "what the validation set is"),
        Declared("provenance", "Provenance", "where the images come from"),
        Declared("collection-dates", "Collection dates", "when they were acquired"),
        Declared("sites-and-devices", "Sites and devices", "where and with what"),
        Declared("inclusion-criteria", "Inclusion criteria", "which cases were included"),
        Declared("exclusion-criteria", "Exclusion criteria", "which were left out"),
        Declared("reference-standard", "Reference standard", "how the true labels were set"),
        Declared("labelled-by", "Labelled by", "who set them"),
        Declared("relation-to-training", "Relation to training data", "overlap, same sites, time"),
        Declared("prevalence", "Prevalence in the intended population", "for PPV and NPV"),
    ),
    "document": (
        Declared("id", "Document id", "the document's identifier"),
        Declared("revision", "Revision", "its revision"),
        Declared("status", "Status", "draft, for review, approved"),
        Declared("authors", "Authors", "who prepared it"),
        Declared("approvers", "Approvers", "who signs it (listed on the sign-off page)"),
        Declared("organisation", "Organisation", "whose document it is"),
        Declared("logo", "Logo file", "an image shown on page one (PNG, JPEG or SVG)"),
    ),
}
"""Every documentation table and its fields, in the report's order."""


@dataclass(frozen=True)
class Gap:
    """An undeclared field: its table, label and what it asks."""

    table: str
    key: str
    label: str
    asks: str


@dataclass(frozen=True)
class Documentation:
    """The declared values: ``(table, key) → text`` (lists joined by ``"; "``).

    Attributes:
        values: What was declared.
        lists: The fields declared as lists, with their items (approvers, authors).
    """

    values: dict[tuple[str, str], str] = field(default_factory=dict)
    lists: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)
    logo: Path | None = None

    def logo_uri(self) -> str:
        """The declared logo as a data URI ("" when none is declared)."""
        if self.logo is None:
            return ""
        data = self.logo.read_bytes()
        return f"data:{_media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"

    def get(self, table: str, key: str) -> str | None:
        """A declared value, or ``None``."""
        return self.values.get((table, key))

    def items(self, table: str, key: str) -> tuple[str, ...]:
        """A declared list's items (a single text is a list of one; nothing: empty)."""
        if (table, key) in self.lists:
            return self.lists[(table, key)]
        value = self.get(table, key)
        return (value,) if value is not None else ()

    def rows(self, table: str) -> tuple[tuple[str, str], ...]:
        """``(label, value)`` of every declared field of ``table``, in declaration order."""
        declared = [d for d in TABLES[table] if (table, d.key) in self.values]
        return tuple((d.label, self.values[(table, d.key)]) for d in declared)

    def gaps(self) -> tuple[Gap, ...]:
        """Every field not declared, table by table."""
        return tuple(
            Gap(table, d.key, d.label, d.asks)
            for table, fields in TABLES.items()
            for d in fields
            if (table, d.key) not in self.values
        )

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """The declared tables as plain values (for the manifest's configuration)."""
        result: dict[str, dict[str, Any]] = {}
        for (table, key), value in self.values.items():
            result.setdefault(table, {})[key] = list(self.lists.get((table, key), ())) or value
        return result


LOGO_BYTES = 2 * 1024 * 1024
"""Largest logo file read."""

_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


def _media_type(data: bytes) -> str | None:
    """PNG, JPEG or SVG by content (not by the file's extension), else ``None``."""
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    head = data[:1024].lstrip().lower()
    return "image/svg+xml" if head.startswith((b"<svg", b"<?xml")) and b"<svg" in head else None


def _logo(value: str, source: Path) -> Path:
    """The logo file named in ``source``'s [document] table, relative to the file.

    Raises:
        ConfigError: It does not exist, is larger than :data:`LOGO_BYTES` or is not a PNG,
            JPEG or SVG image.
    """
    path = source.parent / Path(value).expanduser()
    where = f"config file {str(source)!r} [document] logo {value!r}"
    if not path.is_file():
        raise ConfigError(
            f"{where} is not a file; give a PNG, JPEG or SVG path relative to the config"
        )
    if path.stat().st_size > LOGO_BYTES:
        raise ConfigError(f"{where} is larger than 2 MiB; use a smaller image")
    if _media_type(path.read_bytes()) is None:
        raise ConfigError(f"{where} is not a PNG, JPEG or SVG image; convert it to one of these")
    return path


def parse_documentation(raw: dict[str, Any], source: Path) -> Documentation:
    """The documentation tables found in a parsed config file (removed from ``raw``).

    Raises:
        ConfigError: A table that is not a table, an unknown field (the message lists the
            valid ones), or a value that is not text or a list of texts.
    """
    values: dict[tuple[str, str], str] = {}
    lists: dict[tuple[str, str], tuple[str, ...]] = {}
    for table, fields in TABLES.items():
        declared = raw.pop(table, None)
        if declared is None:
            continue
        where = f"config file {str(source)!r} [{table}]"
        if not isinstance(declared, dict):
            raise ConfigError(
                f"{where} must be a table of texts, e.g. [{table}] then a line per field"
            )
        known = {d.key for d in fields}
        for key, value in declared.items():
            if key not in known:
                valid = ", ".join(sorted(known))
                raise ConfigError(f"{where} has an unknown field {key!r}; valid fields: {valid}")
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                lists[(table, key)] = tuple(v.strip() for v in value)
                values[(table, key)] = "; ".join(lists[(table, key)])
            elif isinstance(value, str) and value.strip():
                values[(table, key)] = value.strip()
            else:
                raise ConfigError(f"{where} {key} must be a text or a list of texts, got {value!r}")
    logo = values.get(("document", "logo"))
    if logo is None:
        return Documentation(values, lists)
    path = _logo(logo, source)
    values[("document", "logo")] = named_path(path)
    return Documentation(values, lists, path)
