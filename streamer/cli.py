"""Command line: the composition root. Builds settings and adapters, then runs a command.

Commands: ``cluster`` (batch), ``run`` (the streaming service), ``recluster``
(the re-clusterer role), ``produce`` (replay a file into Kafka), ``tail`` (print
events), ``settings`` (the configuration table). Flags override ``STREAMER_*``
variables; ``--set section.field=value`` reaches any setting.

Errors streamer raises on purpose print one clear message and exit non-zero
without a traceback: 2 for bad configuration or input, 1 for runtime failures.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from streamer import cli_serve
from streamer.config import Settings, load_settings
from streamer.errors import ConfigError, InputError, StreamerError
from streamer.logs import configure_logging, get_logger

__all__ = ["main", "build_parser"]

log = get_logger("streamer.cli")

# flag dest -> (section, field): flags that map one-to-one onto settings.
_SETTING_FLAGS: dict[str, tuple[str, str]] = {
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


def _add_setting_flags(parser: argparse.ArgumentParser, *names: str) -> None:
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


def _add_column_flags(parser: argparse.ArgumentParser) -> None:
    for fieldname in ("id", "title", "description", "published-at", "source", "url", "label"):
        parser.add_argument(f"--{fieldname}-column", default=None, help=f"column holding the {fieldname}")
    parser.add_argument("--skip", type=int, default=0, help="data rows to skip first")
    parser.add_argument("--limit", type=int, default=None, help="data rows to read at most")
    parser.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of failing")


class _SubcommandsWithCommonFlags:
    """Every subcommand accepts the common flags (``--set``) after its name."""

    def __init__(self, sub: Any, common: argparse.ArgumentParser) -> None:
        self._sub = sub
        self._common = common

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self._sub.add_parser(name, parents=[self._common], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="SECTION.FIELD=VALUE",
        help="override any setting, e.g. --set clustering.min_cluster_size=8",
    )
    parser = argparse.ArgumentParser(prog="streamer", description=__doc__.split("\n")[0])
    sub = _SubcommandsWithCommonFlags(parser.add_subparsers(dest="command", required=True), common)

    cluster = sub.add_parser("cluster", help="cluster a headline file and write a report (batch mode)")
    cluster.add_argument("file", type=Path, help="CSV, TSV or JSONL headline file")
    cluster.add_argument("--out", type=Path, default=Path("out"), help="report folder (default: out)")
    cluster.add_argument("--no-plot", action="store_true", help="skip the UMAP plot")
    _add_column_flags(cluster)
    _add_setting_flags(
        cluster, "uri", "collection", "model", "k", "graph_method", "min_cluster_size", "min_samples",
        "selection_method", "log_level",
    )

    from streamer import cli_stream

    cli_stream.add_commands(sub, _add_setting_flags, _add_column_flags)
    cli_serve.add_commands(sub, _add_setting_flags)

    settings_cmd = sub.add_parser("settings", help="print every setting with its variable and default")
    settings_cmd.add_argument("--markdown", action="store_true", help="as a Markdown table (README)")
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dest, (section, fieldname) in _SETTING_FLAGS.items():
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


def _column_map(args: argparse.Namespace) -> Any:
    from streamer.files import ColumnMap

    return ColumnMap.with_overrides(
        id=args.id_column,
        title=args.title_column,
        description=args.description_column,
        published_at=args.published_at_column,
        source=args.source_column,
        url=args.url_column,
        label=args.label_column,
    )


def _cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.batch import cluster_file
    from streamer.embedding import FlagEmbedder
    from streamer.files import read_headlines
    from streamer.store import MilvusStore

    records, problems = read_headlines(
        args.file, columns=_column_map(args), skip=args.skip, limit=args.limit, skip_invalid=args.skip_invalid
    )
    for problem in problems[:10]:
        print(f"warning: {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"warning: ... {len(problems) - 10} more rows dropped", file=sys.stderr)
    print(f"read {len(records)} headlines from {args.file}", file=sys.stderr)
    embedder = FlagEmbedder(settings.embedding)
    with MilvusStore(settings.milvus, embedder.dim) as store:
        result = cluster_file(
            records,
            embedder,
            store,
            settings.graph,
            settings.clustering,
            args.out,
            plot=not args.no_plot,
            progress=sys.stderr.isatty(),
            on_step=lambda message: print(f"... {message}", file=sys.stderr),
        )
    print((args.out / "summary.txt").read_text(), end="")
    timings = ", ".join(f"{k[:-2]} {v:.1f}s" for k, v in result.timings_s.items())
    print(f"timings: {timings}")
    written = ["assignments.csv", "clusters.json", "summary.txt"] + ([] if args.no_plot else ["plot.html"])
    print(f"report: {', '.join(str(args.out / name) for name in written)}")
    return 0


def _cmd_settings(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.settings_doc import settings_table

    print(settings_table(markdown=args.markdown))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(_overrides(args))
        configure_logging(settings.service.log_level, settings.service.log_format)
        handlers = {"cluster": _cmd_cluster, "settings": _cmd_settings}
        from streamer import cli_stream

        handlers.update(cli_stream.HANDLERS)
        handlers.update(cli_serve.HANDLERS)
        return handlers[args.command](args, settings)
    except (ConfigError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
