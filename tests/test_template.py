"""auditor init: a commented config that reads back as the defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from auditor.config import AuditConfig, resolve_config
from tests.helpers import invoke, one_line_error


def test_init_writes_a_config_that_reads_back_as_every_default(tmp_path: Path) -> None:
    path = tmp_path / "audit.toml"
    result = invoke("init", str(path))

    assert result.exit_code == 0, result.output
    text = path.read_text(encoding="utf-8")
    assert "[robustness]\n" in text and "# [intended-use]" in text and "# [policy]" in text
    config = resolve_config(path, {})
    defaults = AuditConfig(model=config.model, data=config.data)
    for field in dataclasses.fields(AuditConfig):
        if field.name not in ("source", "model", "data", "out"):
            assert getattr(config, field.name) == getattr(defaults, field.name), field.name
    assert config.model == tmp_path / "model.pt"

    again = invoke("init", str(path))
    one_line_error(again, "exists; pass another path (auditor init never overwrites)")
