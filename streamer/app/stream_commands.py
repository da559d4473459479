"""Streaming commands: ``run``, ``produce`` (replay a file into Kafka) and ``tail`` (print events)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.app.options import add_column_flags, add_setting_flags, column_map
from streamer.config.settings import Settings

__all__ = ["add_commands", "HANDLERS"]


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run the streaming service (Kafka in, events out)")
    run.add_argument(
        "--role",
        choices=("all", "ingest", "recluster"),
        default="all",
        help="all: ingest + re-clusterer (one leader at a time); ingest; recluster",
    )
    add_setting_flags(
        run, "bootstrap_servers", "group_id", "input_topic", "uri", "collection", "model", "k", "min_cluster_size",
        "min_samples", "http_port", "log_level",
    )

    produce = sub.add_parser("produce", help="publish a headline file as JSON messages (demo feeder, load generator)")
    produce.add_argument("file", type=Path)
    produce.add_argument("--topic", default=None, help="default: kafka.input_topic")
    produce.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    add_column_flags(produce)
    add_setting_flags(produce, "bootstrap_servers", "log_level")

    tail = sub.add_parser("tail", help="print events of a topic")
    tail.add_argument("--topic", default=None, help="default: kafka.assignments_topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--max", type=int, default=None, help="stop after this many messages")
    tail.add_argument("--idle-timeout", type=float, default=None, help="stop after this many idle seconds")
    tail.add_argument("--json", action="store_true", help="print raw JSON lines")
    add_setting_flags(tail, "bootstrap_servers", "log_level")


def _cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.app.run import run_service

    return asyncio.run(run_service(settings, args.role))


def _headline_messages(records: list[Any]) -> Any:
    for record in records:
        h = record.headline
        payload = {
            "id": h.id,
            "title": h.title,
            "description": h.description,
            "published_at": h.published_at_ms,
            "source": h.source,
            "url": h.url,
        }
        yield h.id.encode(), json.dumps({k: v for k, v in payload.items() if v is not None}).encode()


def _cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.adapters.files import read_headlines
    from streamer.adapters.kafka.tools import produce_messages

    records, problems = read_headlines(
        args.file, columns=column_map(args), skip=args.skip, limit=args.limit, skip_invalid=args.skip_invalid
    )
    topic = args.topic or settings.kafka.input_topic
    sent = asyncio.run(produce_messages(settings.kafka, topic, _headline_messages(records), rate_per_s=args.rate))
    print(f"produced {sent} headlines to {topic} ({len(problems)} rows skipped)", file=sys.stderr)
    return 0


def _format_event(value: bytes, headers: tuple[tuple[str, bytes], ...]) -> str:
    header = dict(headers)
    if "dlq_reason" in header:
        return f"DLQ  {header['dlq_reason'].decode(errors='replace')}  | {value[:120]!r}"
    try:
        event = json.loads(value)
    except ValueError:
        return repr(value[:200])
    if "headline_id" in event:
        return (
            f"{event['reason']:<9} run {event['run_id']:>3}  cluster {event['cluster_id']:>5}  "
            f"{event['status']:<10} p={event['probability']:.2f}  {event['title'][:80]}"
        )
    if "type" in event:
        extra = ""
        if event.get("merged_from"):
            extra = f" merged_from={event['merged_from']}"
        if event.get("split_from") is not None:
            extra = f" split_from={event['split_from']}"
        if event.get("split_into"):
            extra = f" split_into={event['split_into']}"
        return (
            f"{event['type']:<8} cluster {event['cluster_id']:>5} run {event['run_id']:>3} size {event['size']:>5}"
            f"{extra}  {', '.join(event.get('keywords', [])[:5])}"
        )
    return json.dumps(event)


def _cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from streamer.adapters.kafka.tools import consume_messages

    topic = args.topic or settings.kafka.assignments_topic

    async def _tail() -> None:
        async for _key, value, headers in consume_messages(
            settings.kafka,
            topic,
            from_beginning=args.from_beginning,
            max_messages=args.max,
            idle_timeout_s=args.idle_timeout,
        ):
            print(value.decode(errors="replace") if args.json else _format_event(value or b"", headers), flush=True)

    asyncio.run(_tail())
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": _cmd_run,
    "produce": _cmd_produce,
    "tail": _cmd_tail,
}
