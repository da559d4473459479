"""The output topics as an :class:`~streamer.domain.ports.EventSink` (one idempotent producer, acks=all).

Assignment and lifecycle events carry CloudEvents binary-mode headers; dead letters keep the
original key and bytes, with the reason and origin in headers; state values go through
:class:`~streamer.adapters.kafka.state.StateWriter` on the same producer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from streamer.adapters.kafka.client import client_options, translate_errors
from streamer.adapters.kafka.state import STATE_PART_BYTES, StateWriter
from streamer.config.connections import KafkaSettings
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.domain.headline import RawRecord

__all__ = ["AiokafkaSink", "CE_SOURCE"]


CE_SOURCE = "urn:streamer"


_CE_TYPES = {"assignment": "io.streamer.headline.assignment.v1", "cluster": "io.streamer.cluster.{type}.v1"}


def _ce_headers(ce_type: str, event_id: str, emitted_at_ms: int, subject: str) -> list[tuple[str, bytes]]:
    ce_time = datetime.fromtimestamp(emitted_at_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", event_id.encode()),
        ("ce_source", CE_SOURCE.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", ce_time.encode()),
        ("ce_subject", subject.encode()),
        ("content-type", b"application/json"),
    ]


class AiokafkaSink:
    """One idempotent producer for assignments, lifecycle events, state and dead letters."""

    def __init__(self, settings: KafkaSettings, *, max_request_size: int = 16 * 1024 * 1024) -> None:
        self._settings = settings
        self._max_request_size = max_request_size
        self._producer: Any = None
        self._state = StateWriter(settings, self._send_records, part_bytes=max(1, min(STATE_PART_BYTES, max_request_size - 64 * 1024)))

    async def start(self, *, timeout_s: float = 60) -> None:
        if self._producer is not None:
            return
        producer = AIOKafkaProducer(
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_request_size=self._max_request_size,
            compression_type=None if self._settings.compression_type == "none" else self._settings.compression_type,
            **client_options(self._settings),
        )
        with translate_errors("producer start"):
            await asyncio.wait_for(producer.start(), timeout_s)
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> AiokafkaSink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _send_all(self, topic: str, messages: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]) -> None:
        """Send and wait for every acknowledgement (acks=all); raises if any failed."""
        if not messages:
            return
        with translate_errors(f"produce to {topic}"):
            futures = [
                await self._producer.send(topic, value=value, key=key, headers=headers)
                for key, value, headers in messages
            ]
            await asyncio.gather(*futures)

    async def _send_records(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        await self._send_all(topic, [(key, value, []) for key, value in records])

    async def send_records(self, topic: str, records: list[tuple[bytes, bytes | None]]) -> None:
        """Keyed records to any topic, acknowledged (the internal arrivals topic)."""
        await self._send_records(topic, records)

    async def send_assignments(self, events: Sequence[AssignmentEvent]) -> None:
        await self._send_all(
            self._settings.assignments_topic,
            [
                (
                    e.headline_id.encode(),
                    e.to_json_bytes(),
                    _ce_headers(_CE_TYPES["assignment"], e.event_id, e.emitted_at_ms, e.headline_id),
                )
                for e in events
            ],
        )

    async def send_cluster_events(self, events: Sequence[ClusterEvent]) -> None:
        await self._send_all(
            self._settings.cluster_events_topic,
            [
                (
                    str(e.cluster_id).encode(),
                    e.to_json_bytes(),
                    _ce_headers(_CE_TYPES["cluster"].format(type=e.type), e.event_id, e.emitted_at_ms, str(e.cluster_id)),
                )
                for e in events
            ],
        )

    async def dead_letter(self, record: RawRecord, reason: str, error_type: str) -> None:
        """The original key and bytes, with where they came from and why they were refused."""
        headers = [
            *record.headers,
            ("dlq_reason", reason.encode("utf-8", errors="replace")[:4096]),
            ("dlq_error_type", error_type.encode()),
            ("dlq_source_topic", record.topic.encode()),
            ("dlq_source_partition", str(record.partition).encode()),
            ("dlq_source_offset", str(record.offset).encode()),
        ]
        await self._send_all(self._settings.dead_letter_topic, [(record.key, record.value or b"", headers)])

    async def send_state(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Set ``key`` of the compacted state topic to ``value`` (``None`` deletes it); see :class:`StateWriter`."""
        await self._state.write(topic, key, value)
