"""The documentation stays true to the code: the README's settings table and the API reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from idios.config import Settings
from idios.openapi import settings_table, write_reference

ROOT = Path(__file__).resolve().parents[2]
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def settings_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(START) == 1 and readme.count(END) == 1, f"README.md needs one {START} and one {END}"
    section = readme.split(START, 1)[1].split(END, 1)[0]
    assert section.strip(), "the settings table in README.md is empty"
    return section


def test_readme_settings_table_is_generated() -> None:
    assert settings_section().strip() == settings_table().strip(), "README.md settings table is stale: run `make doc`"


def test_readme_lists_every_setting() -> None:
    named = set(re.findall(r"\bIDIOS_[A-Z0-9_]+\b", settings_section()))
    expected = {f"IDIOS_{name.upper()}" for name in Settings.model_fields}
    # Former names a setting is still read by.
    aliases = {
        choice
        for field in Settings.model_fields.values()
        if isinstance(field.validation_alias, AliasChoices)
        for choice in field.validation_alias.choices
        if isinstance(choice, str)
    }
    assert not expected - named, f"README.md settings table misses {sorted(expected - named)}"
    unknown = named - expected - aliases
    assert not unknown, f"README.md settings table names unknown variables {sorted(unknown)}"


@pytest.mark.parametrize("name", ["openapi.yaml", "api.html"])
def test_api_reference_is_up_to_date(name: str, tmp_path: Path) -> None:
    write_reference(Settings(), tmp_path)
    checked_in = ROOT / "doc" / name
    assert checked_in.is_file(), f"doc/{name} is missing: run `make doc`"
    assert checked_in.read_bytes() == (tmp_path / name).read_bytes(), f"doc/{name} is out of date: run `make doc`"
