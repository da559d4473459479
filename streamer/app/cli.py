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
from typing import Any

from streamer.app import batch_commands, serve_commands, stream_commands
from streamer.app.options import overrides
from streamer.config.settings import load_settings
from streamer.domain.errors import ConfigError, InputError, StreamerError
from streamer.observability.logs import configure_logging, get_logger

__all__ = ["main", "build_parser"]

log = get_logger("streamer.cli")







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

    batch_commands.add_commands(sub)
    stream_commands.add_commands(sub)
    serve_commands.add_commands(sub)
    return parser










def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(overrides(args))
        configure_logging(settings.service.log_level, settings.service.log_format)
        handlers = {**batch_commands.HANDLERS, **stream_commands.HANDLERS, **serve_commands.HANDLERS}
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
