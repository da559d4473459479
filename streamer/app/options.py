"""Command-line flags shared by the commands: settings flags, ``--set``, file column flags."""

from __future__ import annotations

import argparse
from typing import Any

from streamer.config.settings import Settings, load_settings
from streamer.domain.errors import ConfigError

__all__ = ["SETTING_FLAGS", "add_column_flags", "add_setting_flags", "column_map", "overrides"]

# flag dest -> (section, field): flags that map one-to-one onto settings.
SETTING_FLAGS: dict[str, tuple[str, str]] = {
    "uri": ("milvus", "uri"),
    "collection": ("milvus", "collection"),
    "model": ("embedding", "model"),
    "k": ("graph", "k"),
    "graph_method": ("graph", "method"),
    "min_cluster_size": ("clustering", "min_cluster_size"),
    "min_samples": ("clustering", "min_samples"),
    "selection_method": ("clustering", "selection_method"),
    "bootstrap_servers": ("kafka", "bootstrap_servers"),
    "group_id": ("kafka", "group_id"),
    "input_topic": ("kafka", "input_topic"),
    "http_port": ("service", "http_port"),
    "log_level": ("service", "log_level"),
}


def add_setting_flags(parser: argparse.ArgumentParser, *names: str) -> None:
    helps = {
        "uri": "Milvus Lite file (*.db) or http(s)://host:port",
        "collection": "Milvus collection",
        "model": "embedding model name or folder",
        "k": "neighbours per headline in the kNN graph",
        "graph_method": "auto | exact | hnsw | milvus",
        "min_cluster_size": "HDBSCAN min_cluster_size",
        "min_samples": "HDBSCAN min_samples",
        "selection_method": "HDBSCAN cluster selection: leaf | eom",
        "bootstrap_servers": "Kafka bootstrap servers",
        "group_id": "Kafka consumer group",
        "input_topic": "Kafka topic with headline messages",
        "http_port": "port of /metrics, /healthz, /readyz",
        "log_level": "DEBUG | INFO | WARNING | ERROR",
    }
    for name in names:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, help=helps[name])


def add_column_flags(parser: argparse.ArgumentParser) -> None:
    for fieldname in ("id", "title", "description", "published-at", "source", "url", "label"):
        parser.add_argument(f"--{fieldname}-column", default=None, help=f"column holding the {fieldname}")
    parser.add_argument("--skip", type=int, default=0, help="data rows to skip first")
    parser.add_argument("--limit", type=int, default=None, help="data rows to read at most")
    parser.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of failing")


def overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dest, (section, fieldname) in SETTING_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.setdefault(section, {})[fieldname] = value
    for assignment in args.assignments:
        key, sep, value = assignment.partition("=")
        section, dot, fieldname = key.partition(".")
        if not sep or not dot:
            raise ConfigError(f"--set expects SECTION.FIELD=VALUE, got {assignment!r}")
        if section not in Settings.model_fields:
            raise ConfigError(f"--set {assignment!r}: unknown section {section!r}; sections: {list(Settings.model_fields)}")
        out.setdefault(section, {})[fieldname] = value
    # Merge with the environment section by section (init values would otherwise replace whole sections).
    base = load_settings()
    return {section: {**getattr(base, section).model_dump(), **values} for section, values in out.items()}


def column_map(args: argparse.Namespace) -> Any:
    from streamer.adapters.files import ColumnMap

    return ColumnMap.with_overrides(
        id=args.id_column,
        title=args.title_column,
        description=args.description_column,
        published_at=args.published_at_column,
        source=args.source_column,
        url=args.url_column,
        label=args.label_column,
    )


