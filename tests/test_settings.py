"""Settings are declared once: the README, the flags and the report's table follow them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from auditor.config import SETTINGS, AuditConfig, resolve_config
from auditor.errors import ConfigError
from auditor.settings import coerce, config_rows, declared, markdown_table, setting
from tests.helpers import invoke

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_settings_table_is_the_declarations() -> None:
    text = README.read_text(encoding="utf-8")
    table = text.split("<!-- settings:begin -->\n")[1].split("\n<!-- settings:end -->")[0]

    assert table == markdown_table(AuditConfig), (
        "README's settings table is stale: replace it with `python -m auditor.config`"
    )


def test_every_flag_setting_is_an_option_of_auditor_run_with_its_help() -> None:
    help_text = " ".join(invoke("run", "--help").output.split())

    for spec in SETTINGS.values():
        if spec.setting.flag:
            assert f"--{spec.key} " in help_text, spec.key
            assert " ".join(spec.setting.help.split())[:40] in help_text, spec.key
        else:
            assert f"--{spec.key} " not in help_text, spec.key


def test_every_setting_has_help_and_a_unique_key() -> None:
    specs = list(declared(AuditConfig))

    assert len({s.key for s in specs}) == len(specs)
    assert all(s.setting.help for s in specs)


def test_the_resolved_config_rows_give_each_setting_its_value_unit_and_origin(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.toml"
    path.write_text('model = "m.pt"\ndata = "d"\n[trust]\ntrust-images = 3\n', encoding="utf-8")
    config = resolve_config(path, {"ig_steps": 8, "mean": "0.5", "std": "0.25"})

    rows = {row.key: row for row in config_rows(config)}

    assert list(rows) == [spec.key for spec in SETTINGS.values()]
    assert (rows["trust-images"].value, rows["trust-images"].source) == ("3", "file audit.toml")
    assert (rows["ig-steps"].value, rows["ig-steps"].source) == ("8", "command line")
    assert (rows["mean"].value, rows["std"].value) == ("0.5", "0.25")
    assert (rows["image-size"].value, rows["image-size"].unit) == ("", "pixels")
    assert rows["bootstrap"].source == "default"


def test_a_new_setting_is_parsed_bounded_and_documented_from_its_one_declaration() -> None:
    @dataclass(frozen=True)
    class Example:
        rounds: int = setting(3, help="How many rounds", unit="rounds", minimum=1, maximum=9)

    (spec,) = declared(Example)

    assert spec.key == "rounds" and coerce(spec, 4) == 4
    with pytest.raises(ConfigError, match="rounds must be an integer, got 'x'"):
        coerce(spec, "x")
    with pytest.raises(ConfigError, match="rounds must be at most 9 rounds, got 10; set it"):
        spec.validate(10)
    assert "| `rounds` | file only | 3 | rounds | How many rounds |" in markdown_table(Example)


def test_stage_settings_defaults_are_the_declared_ones() -> None:
    config = resolve_config(None, {"model": "m.pt", "data": "d"})

    for spec in SETTINGS.values():
        holder = getattr(config, spec.group) if spec.group else config
        if spec.default is not dataclasses.MISSING and spec.name != "methods":
            assert getattr(holder, spec.name) == spec.default, spec.name
