"""Documentation generated from code stays in sync with it."""

from __future__ import annotations

from streamer.app.settings_doc import settings_table
from tests.conftest import REPO


def test_readme_configuration_table_matches_the_settings_model() -> None:
    """`make settings-table` output is what the README shows (regenerate it after changing a setting)."""
    assert settings_table(markdown=True) in (REPO / "README.md").read_text()
