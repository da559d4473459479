"""``streamer serve``'s snapshot follower: the leader's snapshots from the state topic, for ``/api/match``."""

from __future__ import annotations

import asyncio
from typing import Any

from streamer.config.settings import Settings
from streamer.observability.logs import get_logger
from streamer.service.concurrency import BlockingRunner
from streamer.service.match import Matcher

__all__ = ["follow_snapshots"]

log = get_logger(__name__)


async def follow_snapshots(settings: Settings, matcher: Matcher, runner: BlockingRunner, stop: asyncio.Event) -> None:
    """The latest snapshot from the state topic, then every new one, into ``matcher`` (as ingest followers do)."""
    from streamer.adapters.kafka.state import follow_state, read_state
    from streamer.service.snapshots import (
        STATE_SNAPSHOT_KEY,
        decode_state,
        snapshot_from_state,
    )

    topic = settings.tracking.state_topic
    pending: set[asyncio.Task[None]] = set()

    async def take(value: bytes) -> None:
        try:  # decoding a large window's snapshot is seconds of JSON: off the event loop
            matcher.take(await runner.run(lambda: snapshot_from_state(decode_state(value))))
        except Exception as exc:  # a bad record keeps the snapshot held
            log.error("snapshot from the state topic could not be decoded", error=str(exc)[:300])

    def on_record(key: bytes, value: bytes) -> None:
        if key == STATE_SNAPSHOT_KEY:
            task = asyncio.create_task(take(value), name="snapshot-decode")
            pending.add(task)
            task.add_done_callback(pending.discard)

    state: dict[bytes, Any] = await read_state(settings.kafka, topic)
    if STATE_SNAPSHOT_KEY in state:
        await take(state[STATE_SNAPSHOT_KEY])
    await follow_state(settings.kafka, topic, on_record, stop)


