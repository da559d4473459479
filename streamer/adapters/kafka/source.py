"""The input topic as a :class:`~streamer.domain.ports.HeadlineSource` (aiokafka consumer group).

Auto-commit is off: :meth:`AiokafkaSource.commit` is called by the ingest loop only after Milvus
and the event produce acknowledged the batch (at-least-once). A rebalance waits for the batch in
flight (``batch_lock``) and for the hook set with :meth:`AiokafkaSource.on_revoke`, so a revoked
partition's progress is committed before another member reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from streamer.adapters.kafka.client import client_options, translate_errors
from streamer.config.connections import KafkaSettings
from streamer.domain.headline import RawRecord
from streamer.observability.logs import get_logger

__all__ = ["AiokafkaSource"]

log = get_logger(__name__)


class AiokafkaSource:
    """The input topic, read in a consumer group; offsets committed explicitly."""

    def __init__(self, settings: KafkaSettings, *, topics: Sequence[str] | None = None) -> None:
        self._settings = settings
        self._topics = list(topics or [settings.input_topic])
        self._consumer: Any = None
        #: Held while a batch is processed; a rebalance waits for it before giving partitions up.
        self.batch_lock = asyncio.Lock()
        self.assigned: set[tuple[str, int]] = set()
        #: Bumped at every revocation and assignment (see HeadlineSource.generation).
        self.generation = 0
        self._before_revoke: Callable[[], Awaitable[None]] | None = None

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` (under ``batch_lock``) before partitions are given up: the ingest loop's
        write-behind commits of batches already published."""
        self._before_revoke = hook

    async def start(self, *, timeout_s: float = 60) -> None:
        if self._consumer is not None:
            return
        s = self._settings
        consumer = AIOKafkaConsumer(
            group_id=s.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            max_poll_interval_ms=s.max_poll_interval_ms,
            max_partition_fetch_bytes=max(1_048_576, s.max_message_bytes * 4),
            **client_options(s),
        )
        consumer.subscribe(self._topics, listener=_RebalanceListener(self, consumer))
        with translate_errors("consumer start"):
            await asyncio.wait_for(consumer.start(), timeout_s)
        self._consumer = consumer
        log.info("kafka consumer started", topics=self._topics, group=s.group_id)

    async def stop(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def __aenter__(self) -> AiokafkaSource:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        """Up to ``max_records`` records, waiting at most ``timeout_ms`` for the first ones."""
        with translate_errors("fetch"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [
            RawRecord(
                topic=tp.topic,
                partition=tp.partition,
                offset=m.offset,
                key=m.key,
                value=m.value,
                headers=tuple((k, v) for k, v in (m.headers or ())),
                timestamp_ms=m.timestamp,
            )
            for tp, messages in batches.items()
            for m in messages
        ]

    async def commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        """Commit ``{(topic, partition): next offset to read}`` for the partitions still owned."""
        owned = {TopicPartition(t, p): o for (t, p), o in next_offsets.items() if (t, p) in self.assigned}
        if not owned:
            return
        with translate_errors("commit"):
            await self._consumer.commit(owned)

    async def probe(self) -> None:
        """A metadata round trip: an idle consumer would not notice a dead broker otherwise."""
        if self._consumer is None:
            return
        # Bounded by aiokafka's own request_timeout_ms (a dead broker refuses at once); not cancelled from outside.
        with translate_errors("metadata probe"):
            await self._consumer.topics()

    async def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the end of each owned partition (for the lag gauge)."""
        out: dict[tuple[str, int], int] = {}
        if self._consumer is None:
            return out
        for topic, partition in list(self.assigned):
            tp = TopicPartition(topic, partition)
            highwater = self._consumer.highwater(tp)
            try:
                position = await self._consumer.position(tp)
            except Exception:  # partition revoked between listing and asking: no lag to report
                continue
            if highwater is not None:
                out[(topic, partition)] = max(0, highwater - position)
        return out


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Let the batch in flight finish (and commit) before partitions move to another member."""

    def __init__(self, source: AiokafkaSource, consumer: Any) -> None:
        self._source = source
        self._consumer = consumer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._source.batch_lock:
            hook = self._source._before_revoke
            if hook is not None:
                try:
                    await hook()
                except Exception as exc:  # uncommitted: the next owner reads those records again
                    log.warning("published batches not committed before the rebalance", error=str(exc)[:300])
            self._source.generation += 1
            for tp in revoked:
                self._source.assigned.discard((tp.topic, tp.partition))
        if revoked:
            log.info("partitions revoked", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._source.generation += 1
        for tp in assigned:
            self._source.assigned.add((tp.topic, tp.partition))
        # Read on from the committed offsets: batches fetched before the rebalance are dropped by
        # the ingest loop (their generation is gone), and a partition this member keeps must not
        # go on from its fetch position past them.
        for tp in assigned:
            try:
                committed = await self._consumer.committed(tp)
                if committed is not None:
                    self._consumer.seek(tp, committed)
                else:
                    await self._consumer.seek_to_beginning(tp)
            except Exception as exc:  # the position the consumer had: at worst records are re-read later
                log.warning("could not rewind to the committed offset", partition=f"{tp.topic}[{tp.partition}]",
                            error=str(exc)[:200])
        if assigned:
            log.info("partitions assigned", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


