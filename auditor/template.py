"""``auditor init``: a commented audit config to start from.

Every setting appears with its default and its help, run-level ones first and then one
table per stage, as ``auditor run --config`` reads them; the documentation tables and a
policy example follow, commented out. The file parses as it is once ``model`` and
``data`` point at real files (a test reads it back and gets the defaults).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditor.config import SETTINGS
from auditor.documentation import TABLES
from auditor.errors import OutputError

__all__ = ["config_template", "write_template"]

_PLACEHOLDERS = {"model": "model.pt", "data": "data/manifest.csv"}


def _toml(value: Any) -> str:
    """A default as TOML: texts and paths quoted, lists bracketed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def config_template() -> str:
    """The text of the commented config."""
    lines = [
        "# Auditor audit config (auditor run --config audit.toml). Defaults are shown;",
        "# flags given on the command line override this file.",
        "",
    ]
    groups: dict[str | None, list[str]] = {}
    for spec in SETTINGS.values():
        block = groups.setdefault(spec.group, [])
        block.append(
            f"# {spec.setting.help}" + (f" ({spec.setting.unit})" if spec.setting.unit else "")
        )
        if spec.name in _PLACEHOLDERS:
            block.append(f"{spec.key} = {_toml(_PLACEHOLDERS[spec.name])}")
        elif spec.default is None or spec.default == ():
            block.append(f"# {spec.key} =  # default: {spec.setting.default_text or 'none'}")
        else:
            block.append(f"{spec.key} = {_toml(spec.default)}")
        block.append("")
    for group, block in groups.items():
        if group is not None:
            lines.append(f"[{group}]")
        lines += block
    for table, fields in TABLES.items():
        lines.append(f"# [{table}]  (documentation: each field a text or a list of texts)")
        lines += [f'# {d.key} = ""  # {d.asks}' for d in fields]
        lines.append("")
    lines += [
        "# [policy]  (acceptance criteria; auditor run exits 3 when one fails)",
        '# "accuracy.ci_low" = ">= 0.85"',
        '# "fairness.equalized_odds_difference.value" = "<= 0.10"',
        '# "explanations.failed_randomisation" = "== 0"',
    ]
    return "\n".join(lines) + "\n"


def write_template(path: Path) -> None:
    """Write :func:`config_template` to ``path``.

    Raises:
        OutputError: ``path`` exists (it is never overwritten) or cannot be written.
    """
    if path.exists():
        raise OutputError(
            f"{str(path)!r} exists; pass another path (auditor init never overwrites)"
        )
    try:
        path.write_text(config_template(), encoding="utf-8")
    except OSError as error:
        raise OutputError(f"cannot write {str(path)!r} ({error.strerror or error})") from None
