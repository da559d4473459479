"""Batch commands: ``cluster`` (the composition root of batch mode) and ``settings``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.app.options import add_column_flags, add_setting_flags, column_map
from streamer.config.settings import Settings

__all__ = ["HANDLERS", "add_commands"]


def add_commands(sub: Any) -> None:
    cluster = sub.add_parser("cluster", help="cluster a headline file and write a report (batch mode)")
    cluster.add_argument("file", type=Path, help="CSV, TSV or JSONL headline file")
    cluster.add_argument("--out", type=Path, default=Path("out"), help="report folder (default: out)")
    cluster.add_argument("--no-plot", action="store_true", help="skip the UMAP plot")
    add_column_flags(cluster)
    add_setting_flags(
        cluster, "uri", "collection", "model", "k", "graph_method", "min_cluster_size", "min_samples",
        "selection_method", "log_level",
    )
    settings_cmd = sub.add_parser("settings", help="print every setting with its variable and default")
    settings_cmd.add_argument("--markdown", action="store_true", help="as a Markdown table (README)")


def _cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.adapters.embedding import FlagEmbedder
    from streamer.adapters.files import read_headlines
    from streamer.adapters.milvus.store import MilvusStore
    from streamer.batch.cluster import cluster_file

    records, problems = read_headlines(
        args.file, columns=column_map(args), skip=args.skip, limit=args.limit, skip_invalid=args.skip_invalid
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
    from streamer.app.settings_doc import settings_table

    print(settings_table(markdown=args.markdown))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {"cluster": _cmd_cluster, "settings": _cmd_settings}
