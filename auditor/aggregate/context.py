"""The declared-context section: the model, its intended use and the data, as declared,
and every field not declared (documentation gaps)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.aggregate.inputs import AuditInputs
from auditor.documentation import Gap

__all__ = ["ContextView", "context_view"]

_TITLES = {  # [data-details] is shown in the data section
    "model-details": "Model",
    "intended-use": "Intended use",
    "document": "Document",
}


@dataclass(frozen=True)
class ContextTable:
    """One documentation table's declared fields: ``(label, value)``."""

    title: str
    table: str
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class ContextView:
    """The section: the declared tables, and the gaps."""

    tables: tuple[ContextTable, ...]
    gaps: tuple[Gap, ...]
    n_declared: int


def context_view(inputs: AuditInputs) -> ContextView:
    """The declared context and its gaps (always present: an empty declaration is all gaps)."""
    documentation = inputs.config.documentation
    tables = tuple(
        ContextTable(title, table, documentation.rows(table))
        for table, title in _TITLES.items()
        if documentation.rows(table)
    )
    return ContextView(tables, documentation.gaps(), len(documentation.values))
