"""Render the settings model as a table (``streamer settings``; the README's configuration table)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from streamer.config.settings import ENV_PREFIX, Settings

__all__ = ["settings_table"]


def _default(field: Any) -> str:
    value = field.default
    if value is None:
        return ""
    if hasattr(value, "get_secret_value"):
        return "(secret)"
    return str(value)


def settings_table(*, markdown: bool = False) -> str:
    rows: list[tuple[str, str, str]] = []
    for section, section_field in Settings.model_fields.items():
        model: type[BaseModel] = section_field.annotation  # type: ignore[assignment]
        for name, field in model.model_fields.items():
            env = f"{ENV_PREFIX}{section.upper()}__{name.upper()}"
            rows.append((env, _default(field), (field.description or "").replace("|", "/")))
    if markdown:
        lines = ["| variable | default | meaning |", "|---|---|---|"]
        lines += [f"| `{env}` | `{default}` | {text} |" for env, default, text in rows]
        return "\n".join(lines)
    width = max(len(env) for env, _, _ in rows)
    return "\n".join(f"{env:<{width}}  {default:<24}  {text}" for env, default, text in rows)
