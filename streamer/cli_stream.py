"""Streaming commands of the CLI (filled in by the streaming service)."""

from __future__ import annotations

from typing import Any

HANDLERS: dict[str, Any] = {}


def add_commands(sub: Any, add_setting_flags: Any, add_column_flags: Any) -> None:
    return None
