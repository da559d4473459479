"""Feeding the read model: from the Kafka output topics, or from a finished run's folder.

- :class:`KafkaFeed` reads ``headline-assignments`` and ``cluster-events`` from the beginning
  of retention (no consumer group: every replica reads everything, nothing is committed, a
  restart rebuilds the model) and keeps following them. It knows when it has caught up with
  the end offsets seen at start (readiness). Events are decoded and applied on the event
  loop in chunks of ``chunk`` with a yield between chunks, so requests never wait for more
  than one chunk (a few ms).

A finished run's folder feeds it through :mod:`streamer.adapters.event_files` instead.

Events are read leniently: fields this version does not know are ignored (a newer producer
may add optional ones without bumping ``schema_version``); an event that does not validate is
logged and skipped, never fatal. Part of the Kafka adapter
(:mod:`streamer.adapters.kafka`), whose connection options it reuses.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterable

from pydantic import ValidationError

from streamer.config.connections import KafkaSettings
from streamer.core.readmodel import ReadModel
from streamer.domain.errors import BrokerError
from streamer.domain.events import decode_event
from streamer.domain.views import FeedProgress
from streamer.observability.logs import get_logger

__all__ = ["KafkaFeed", "apply_chunk"]

log = get_logger(__name__)


def apply_chunk(model: ReadModel, progress: FeedProgress, events: Iterable[tuple[str, bytes | None]]) -> None:
    """Decode and apply one chunk of (kind, value) events; one that does not validate is skipped.

    Then the collector's youngest generation is collected. With the window full, the headlines
    leaving it free about as many objects as the arriving ones allocate, so CPython's
    allocation count never reaches its threshold: the tuples the model keeps would stay tracked
    and pile up for one long full collection later (a 150 ms pause in ``bench/api_load.py``).
    Collected per chunk (~0.2 ms), they are untracked while they are few.
    """
    for kind, value in events:
        if value is None:
            continue
        try:
            event = decode_event(kind, value)
        except (ValueError, ValidationError) as exc:
            progress.rejected += 1
            log.warning("event skipped: not a valid event", kind=kind, error=str(exc)[:200])
            continue
        model.apply(event)
        progress.applied += 1
    gc.collect(0)


class KafkaFeed:
    """Both output topics, from the beginning, applied to ``model`` until ``stop``."""

    def __init__(self, settings: KafkaSettings, model: ReadModel, *, chunk: int = 256, poll_ms: int = 500) -> None:
        self._settings = settings
        self._model = model
        self._chunk = chunk
        self._poll_ms = poll_ms
        self._kinds = {settings.assignments_topic: "assignment", settings.cluster_events_topic: "cluster"}
        self.progress = FeedProgress(source=f"kafka {settings.bootstrap_servers}: {', '.join(self._kinds)}")

    async def run(self, stop: asyncio.Event) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition
        from aiokafka.errors import KafkaError

        from streamer.adapters.kafka.client import client_options

        consumer = AIOKafkaConsumer(
            enable_auto_commit=False, auto_offset_reset="earliest", **client_options(self._settings)
        )
        try:
            await asyncio.wait_for(consumer.start(), 60)
        except (KafkaError, TimeoutError) as exc:
            raise BrokerError(f"read feed: Kafka consumer start failed: {type(exc).__name__}: {exc}") from exc
        try:
            tps = [
                TopicPartition(topic, p)
                for topic in self._kinds
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            if not tps:
                raise BrokerError(f"read feed: topics {list(self._kinds)} have no partitions")
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            log.info("read feed started", partitions=len(tps), events_at_start=sum(ends.values()))
            while not stop.is_set():
                try:
                    batches = await consumer.getmany(timeout_ms=self._poll_ms, max_records=4 * self._chunk)
                except KafkaError as exc:  # the client reconnects by itself; keep polling
                    log.warning("read feed poll failed", error=str(exc)[:300])
                    await asyncio.sleep(1)
                    continue
                for tp, messages in batches.items():
                    kind = self._kinds[tp.topic]
                    for start in range(0, len(messages), self._chunk):
                        apply_chunk(self._model, self.progress,
                                    ((kind, m.value) for m in messages[start : start + self._chunk]))
                        await asyncio.sleep(0)  # let requests in between chunks
                if not self.progress.caught_up and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self.progress.caught_up = True
                    log.info("read feed caught up", events=self.progress.applied, topics=self._model.live_topic_count())
        finally:
            await consumer.stop()
