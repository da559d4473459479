"""The whole configuration: every section, built from the environment and command-line overrides.

Command-line flags override the environment (they are passed as init arguments, which
pydantic-settings ranks first). Only the composition roots (``streamer.app``) build a
:class:`Settings`; every other module receives the section it needs through its constructor.
A bad value raises :class:`~streamer.domain.errors.ConfigError` naming the setting, its
environment variable and what is allowed.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.config.connections import KafkaSettings, MilvusSettings
from streamer.config.sections import (
    ClusteringSettings,
    EmbeddingSettings,
    GraphSettings,
    ServiceSettings,
    TrackingSettings,
)
from streamer.domain.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings"]

ENV_PREFIX = "STREAMER_"


class Settings(BaseSettings):
    """Everything streamer can be told. Read from ``STREAMER_*`` variables and CLI flags."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    embedding: EmbeddingSettings = EmbeddingSettings()
    milvus: MilvusSettings = MilvusSettings()
    graph: GraphSettings = GraphSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    tracking: TrackingSettings = TrackingSettings()
    kafka: KafkaSettings = KafkaSettings()
    service: ServiceSettings = ServiceSettings()

    @model_validator(mode="after")
    def _graph_covers_min_samples(self) -> Settings:
        if self.graph.k < self.clustering.min_samples:
            raise ValueError(
                f"graph.k ({self.graph.k}) must be >= clustering.min_samples ({self.clustering.min_samples}): "
                "every headline needs min_samples neighbours for its core distance"
            )
        return self


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc if isinstance(part, str))


def load_settings(overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Build :class:`Settings` from the environment with ``overrides`` (CLI flags) on top.

    Raises
    ------
    ConfigError
        Naming every bad setting as ``section.field`` and its environment variable.
    """
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(part) for part in loc)
            got = err.get("input")
            shown = "<hidden>" if any(s in dotted for s in ("password", "token")) else repr(got)
            problems.append(f"{dotted} ({_env_name(loc)}): {err['msg']}; got {shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None


