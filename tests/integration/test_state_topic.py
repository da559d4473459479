"""The re-clusterer's compacted state topic on the real broker: values larger than one producer
request (a million-headline window's snapshot) are written in parts and read back whole."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from streamer.adapters.kafka import state as kafka_state
from streamer.adapters.kafka.sink import AiokafkaSink
from streamer.adapters.kafka.state import (
    STATE_MAX_BYTES,
    STATE_PART_BYTES,
    follow_state,
    read_state,
)
from streamer.config.connections import KafkaSettings
from tests.unit.helpers import SMALL_DATA_PARAMS

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PRODUCER_LIMIT = 16 * 1024 * 1024  # AiokafkaSink's max_request_size


def _state_topic(kafka_topic: Any) -> str:
    # The config streamer run gives the state topic (service.py).
    return kafka_topic(1, config={"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)}, prefix="state")


async def _raw_latest(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Latest record per key as stored (part keys and tombstones included)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_bytes=STATE_MAX_BYTES,
                                max_partition_fetch_bytes=STATE_MAX_BYTES)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        out: dict[bytes, bytes | None] = {}
        while await consumer.position(tp) < end:
            for messages in (await consumer.getmany(timeout_ms=1000)).values():
                for m in messages:
                    out[m.key] = m.value
        return out
    finally:
        await consumer.stop()


def _live_parts(raw: dict[bytes, bytes | None], key: bytes) -> set[bytes]:
    return {k for k, v in raw.items() if v is not None and k.startswith(key + b"\x1fpart\x1f")}


def test_state_larger_than_the_producer_limit_is_written_in_parts_and_read_back_whole(
    kafka_bootstrap_servers: str, kafka_topic: Any
) -> None:
    """A 19 MiB incompressible value (over the 16 MiB request cap that made a 1M snapshot retry
    forever) round-trips through send_state/read_state; small values stay one record."""
    topic = _state_topic(kafka_topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap_servers)
    big = os.urandom(PRODUCER_LIMIT + 3 * 1024 * 1024 + 17)
    small = b'{"next_id": 7}'

    async def main() -> tuple[dict[bytes, bytes], dict[bytes, bytes | None]]:
        sink = AiokafkaSink(settings)
        await sink.start()
        try:
            # The defect: one record this size is refused by the producer itself.
            with pytest.raises(MessageSizeTooLargeError):
                await sink._producer.send_and_wait(topic, key=b"too-big", value=big)
            await asyncio.wait_for(sink.send_state(topic, b"snapshot", big), 120)
            await sink.send_state(topic, b"registry", small)
        finally:
            await sink.stop()
        return await read_state(settings, topic, timeout_s=60), await _raw_latest(kafka_bootstrap_servers, topic)

    state, raw = asyncio.run(main())
    assert state == {b"snapshot": big, b"registry": small}
    assert raw[b"registry"] == small  # below STATE_PART_BYTES: a plain record, as before
    parts = _live_parts(raw, b"snapshot")
    assert len(parts) == -(-len(big) // STATE_PART_BYTES)
    assert all(len(raw[k] or b"") <= STATE_PART_BYTES for k in parts)


def test_replaced_and_half_written_states(kafka_bootstrap_servers: str, kafka_topic: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers see the last committed value, never a half-written one; the follower gets whole
    values; replaced generations are deleted, also by a new writer (a restarted leader)."""
    topic = _state_topic(kafka_topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap_servers)
    v1, v2, v3 = (os.urandom(3 * STATE_PART_BYTES + i) for i in (1, 2, 3))

    async def main() -> None:
        seen: list[tuple[bytes, bytes]] = []
        stop = asyncio.Event()
        sink = AiokafkaSink(settings)
        await sink.start()
        try:
            await sink.send_state(topic, b"snapshot", v1)
            follower = asyncio.create_task(follow_state(settings, topic, lambda k, v: seen.append((k, v)), stop, poll_ms=200))
            await asyncio.sleep(2)  # the follower is at the end of the topic
            await sink.send_state(topic, b"snapshot", v2)
            raw = await _raw_latest(kafka_bootstrap_servers, topic)
            assert len(_live_parts(raw, b"snapshot")) == 4  # v1's four parts were deleted after v2's commit
        finally:
            await sink.stop()

        # A writer dies half-way: parts of a new generation, no manifest.
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap_servers, acks="all", max_request_size=PRODUCER_LIMIT)
        await producer.start()
        try:
            for i in range(2):
                await producer.send_and_wait(topic, key=kafka_state._part_key(b"snapshot", "deadbeef", i), value=os.urandom(100))
        finally:
            await producer.stop()
        assert (await read_state(settings, topic))[b"snapshot"] == v2

        # A restarted leader (a new sink: it never wrote v2) commits v3. With no grace period the
        # dead writer's parts go as well as v2's.
        monkeypatch.setattr(kafka_state, "_ORPHAN_GRACE_MS", 0)
        sink2 = AiokafkaSink(settings)
        await sink2.start()
        try:
            await sink2.send_state(topic, b"snapshot", v3)
        finally:
            await sink2.stop()
        assert (await read_state(settings, topic))[b"snapshot"] == v3
        raw = await _raw_latest(kafka_bootstrap_servers, topic)
        live = _live_parts(raw, b"snapshot")
        assert len(live) == 4 and all(b"deadbeef" not in k for k in live)

        deadline = asyncio.get_running_loop().time() + 30
        while len(seen) < 2 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(follower, 10)
        assert seen == [(b"snapshot", v2), (b"snapshot", v3)]  # whole values only, no parts, no half write

    asyncio.run(main())


def test_a_topic_minted_after_the_last_run_comes_back_from_the_state_topic(kafka_bootstrap_servers: str, kafka_topic: Any) -> None:
    """What a restart reads: the last run's registry, then the record the ingest loop wrote at a
    mint (the counter and the emerging topic). Restored on fresh objects, the topic is back with
    its members, ready for the redelivered arrivals (tests/unit/test_arrivals.py)."""
    import json

    from streamer.core.tracking import ClusterRegistry
    from streamer.core.window import ReclusterConfig
    from streamer.domain.headline import Headline
    from streamer.service.recluster import Reclusterer
    from streamer.service.snapshots import (
        STATE_ID_COUNTER_KEY,
        STATE_REGISTRY_KEY,
        SnapshotHolder,
        encode_state,
    )

    topic = _state_topic(kafka_topic)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap_servers)
    before = ClusterRegistry()
    last_run = before.to_state()
    topic_id = before.mint(["a1", "a2", "a3"], Headline(id="a3", title="a story breaks"))

    async def write_then_read() -> dict[bytes, bytes]:
        sink = AiokafkaSink(settings)
        await sink.start()
        try:
            await sink.send_state(topic, STATE_REGISTRY_KEY, encode_state(last_run))
            await sink.send_state(topic, STATE_ID_COUNTER_KEY, json.dumps(before.emerging_state()).encode())
        finally:
            await sink.stop()
        return await read_state(settings, topic, timeout_s=60)

    state = asyncio.run(write_then_read())
    holder = SnapshotHolder()
    after = ClusterRegistry()
    reclusterer = Reclusterer(store=None, sink=None, runner=None, holder=holder, registry=after,  # type: ignore[arg-type]
                              metrics=None, config=ReclusterConfig(params=SMALL_DATA_PARAMS), dim=8)  # type: ignore[arg-type]
    reclusterer.restore(state)
    assert reclusterer.restored_emerging == [topic_id]
    assert after.next_id == before.next_id and after.clusters[topic_id].members == {"a1", "a2", "a3"}
    assert {h: holder.last_assigned[h] for h in ("a1", "a2", "a3")} == dict.fromkeys(("a1", "a2", "a3"), topic_id)
    assert after.placed("a2") == (topic_id, True)
    assert after.minted_event(topic_id).event_id == before.minted_event(topic_id).event_id
