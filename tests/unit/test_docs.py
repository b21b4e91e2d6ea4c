"""The documentation stays true to the code: the settings table of doc/configuration.md and the API reference."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import AliasChoices

from idios.config import Settings
from idios.openapi import settings_table, update_settings_table, write_reference

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "doc" / "configuration.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def settings_section(page: Path = PAGE) -> str:
    text = page.read_text(encoding="utf-8")
    assert text.count(START) == 1 and text.count(END) == 1, f"{page.name} needs one {START} and one {END}"
    section = text.split(START, 1)[1].split(END, 1)[0]
    assert section.strip(), f"the settings table in {page.name} is empty"
    return section


def test_settings_table_is_generated() -> None:
    assert settings_section().strip() == settings_table().strip(), (
        "the settings table of doc/configuration.md is stale: run `make doc`"
    )


def test_settings_table_is_only_in_configuration_page() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "doc").glob("*.md"))]:
        if page != PAGE:
            assert START not in page.read_text(encoding="utf-8"), f"{page.name} holds a settings table marker"


def test_update_settings_table_refreshes_only_the_table(tmp_path: Path) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"# Configuration\n\nbefore\n\n{START}\n| stale |\n{END}\n\nafter\n", encoding="utf-8")
    update_settings_table(page)
    text = page.read_text(encoding="utf-8")
    assert settings_section(page).strip() == settings_table().strip()
    assert text.startswith("# Configuration\n\nbefore\n\n") and text.endswith(f"{END}\n\nafter\n")


def test_lists_every_setting() -> None:
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
    assert not expected - named, f"doc/configuration.md settings table misses {sorted(expected - named)}"
    unknown = named - expected - aliases
    assert not unknown, f"doc/configuration.md settings table names unknown variables {sorted(unknown)}"


@pytest.mark.parametrize("name", ["openapi.yaml", "api.html"])
def test_api_reference_is_up_to_date(name: str, tmp_path: Path) -> None:
    write_reference(Settings(), tmp_path)
    checked_in = ROOT / "doc" / name
    assert checked_in.is_file(), f"doc/{name} is missing: run `make doc`"
    assert checked_in.read_bytes() == (tmp_path / name).read_bytes(), f"doc/{name} is out of date: run `make doc`"
