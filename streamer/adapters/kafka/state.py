"""The compacted state topic as a key-value store: values of any size, read whole or followed.

The re-clusterer keeps its registry, snapshot and id counter under a few keys of one
compacted, single-partition topic. A value up to :data:`STATE_PART_BYTES` is one record. A
larger one (a million-headline window's snapshot is tens of MB) is written as numbered parts
under keys of a fresh generation and then, once every part is acknowledged, a small manifest
under the value's own key (generation, part count, size, SHA-256). The manifest is the commit
point: a reader gets the old value or the new one, never a mix, also when the writer dies
half-way or a retry writes a second generation.

- :class:`StateWriter` writes values and deletes the parts of the generations a commit replaced.
- :class:`StateAssembler` is the one place where parts become values again; both
  :func:`read_state` (everything up to the end, at start-up) and :func:`follow_state` (new
  values as they come) use it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streamer.adapters.kafka.client import client_options, tail_topic, translate_errors
from streamer.config.connections import KafkaSettings
from streamer.domain.errors import BrokerError
from streamer.observability.logs import get_logger

__all__ = [
    "STATE_MAX_BYTES",
    "STATE_PART_BYTES",
    "StateAssembler",
    "StateValue",
    "StateWriter",
    "follow_state",
    "read_state",
]

log = get_logger(__name__)

#: Largest state-topic record the topic accepts and the state consumers fetch.
STATE_MAX_BYTES = 64 * 1024 * 1024
#: Largest value one state record carries; larger ones are written in parts. Under 1 MiB, so a
#: part fits the broker's default ``max.message.bytes`` and any producer ``max_request_size``.
STATE_PART_BYTES = 960 * 1024
STATE_FETCH_OPTIONS = {"max_partition_fetch_bytes": STATE_MAX_BYTES, "fetch_max_bytes": STATE_MAX_BYTES}
# Part keys: <key> 0x1f "part" 0x1f <generation> 0x1f <index>; 0x1f never occurs in a state key.
_PART_MARK = b"\x1fpart\x1f"
_MANIFEST_MAGIC = b"streamer-state-manifest/1\n"
_ORPHAN_GRACE_MS = 10 * 60 * 1000

#: Sends ``(key, value)`` records to a topic and returns once all are acknowledged.
SendRecords = Callable[[str, list[tuple[bytes, bytes | None]]], Awaitable[None]]


def _part_key(key: bytes, generation: str, index: int) -> bytes:
    return key + _PART_MARK + generation.encode() + b"\x1f" + b"%06d" % index


def _split_part_key(key: bytes) -> tuple[bytes, str] | None:
    """``(state key, generation)`` of a part key, None for any other key."""
    base, mark, rest = key.partition(_PART_MARK)
    return (base, rest.partition(b"\x1f")[0].decode()) if mark else None


def _parse_manifest(value: bytes) -> dict[str, Any] | None:
    if not value.startswith(_MANIFEST_MAGIC):
        return None
    manifest: dict[str, Any] = json.loads(value[len(_MANIFEST_MAGIC) :])
    return manifest


@dataclass(frozen=True)
class StateValue:
    """A value of a state key; ``value`` is None when its manifest's parts are missing or corrupt."""

    key: bytes
    value: bytes | None
    detail: str = ""


class StateAssembler:
    """State-topic records in offset order in, whole values out.

    Parts are held until the manifest that names them arrives; the manifest then yields the
    value it commits (its parts are released) or, when a part is missing or the checksum
    fails, a :class:`StateValue` without a value saying why. Tombstones yield nothing.
    """

    def __init__(self) -> None:
        self._parts: dict[bytes, bytes] = {}

    def add(self, key: bytes, value: bytes | None) -> StateValue | None:
        if _PART_MARK in key:
            if value is None:
                self._parts.pop(key, None)
            else:
                self._parts[key] = value
            return None
        if value is None:
            return None
        manifest = _parse_manifest(value)
        if manifest is None:
            return StateValue(key, value)
        prefix = key + _PART_MARK
        chunks = [self._parts.get(_part_key(key, manifest["generation"], i)) for i in range(int(manifest["parts"]))]
        for part_key in [k for k in self._parts if k.startswith(prefix)]:
            del self._parts[part_key]
        whole = b"".join(c for c in chunks if c is not None)
        if any(c is None for c in chunks) or len(whole) != manifest["size"] or (
            hashlib.sha256(whole).hexdigest() != manifest["sha256"]
        ):
            detail = f"{manifest['parts']} parts of generation {manifest['generation']} are missing or fail their checksum"
            return StateValue(key, None, detail)
        return StateValue(key, whole)


class StateWriter:
    """Writes state values (in parts when large) and garbage-collects the parts they replace."""

    def __init__(self, settings: KafkaSettings, send: SendRecords, *, part_bytes: int = STATE_PART_BYTES) -> None:
        self._settings = settings
        self._send = send
        self._part_bytes = part_bytes
        # Part keys of each state key to delete at a later commit of that key, with the earliest
        # time (ms) that may happen: parts this writer wrote and its first scan of the topic found.
        self._due: dict[str, dict[bytes, dict[bytes, int]]] = {}
        self._scanned: set[str] = set()

    async def write(self, topic: str, key: bytes, value: bytes | None) -> None:
        """Set ``key`` to ``value`` (``None`` deletes it); returns once the commit is acknowledged.

        After the commit the parts of the generations it replaced are deleted (tombstones), so
        compaction reclaims them; a failure there is logged and retried at the next commit.
        """
        if _PART_MARK in key:
            raise ValueError(f"state key {key!r} contains the reserved part marker")
        chunked = value is not None and (len(value) > self._part_bytes or value.startswith(_MANIFEST_MAGIC))
        if chunked or value is None:
            await self._scan(topic)
        due = self._due.setdefault(topic, {}).setdefault(key, {})
        new_keys: set[bytes] = set()
        if value is not None and chunked:
            generation = uuid.uuid4().hex
            parts = [value[i : i + self._part_bytes] for i in range(0, len(value), self._part_bytes)]
            keys = [_part_key(key, generation, i) for i in range(len(parts))]
            new_keys = set(keys)
            due.update(dict.fromkeys(keys, 0))  # a failed attempt's parts go at the next commit
            await self._send(topic, list(zip(keys, parts, strict=True)))
            value = _MANIFEST_MAGIC + json.dumps(
                {"generation": generation, "parts": len(parts), "size": len(value), "sha256": hashlib.sha256(value).hexdigest()}
            ).encode()
        await self._send(topic, [(key, value)])
        now_ms = int(time.time() * 1000)
        stale = sorted(k for k, not_before_ms in due.items() if k not in new_keys and not_before_ms <= now_ms)
        if stale:
            try:
                await self._send(topic, [(k, None) for k in stale])
                for k in stale:
                    del due[k]
            except BrokerError as exc:
                log.warning("deleting replaced state parts failed; retried at the next commit", topic=topic, error=str(exc))

    async def _scan(self, topic: str) -> None:
        """Once per topic: learn which parts on it become garbage once this writer commits their key.

        The parts of each key's current value go at this writer's next commit of that key (which
        replaces it). Parts no manifest uses were left by a writer that died before its commit,
        or belong to another writer's commit in progress (a leadership hand-over): they go at
        the first commit after they are ``_ORPHAN_GRACE_MS`` old, when no live writer is still
        on them (a commit writes its parts and manifest back to back, in seconds).
        """
        if topic in self._scanned:
            return
        try:
            latest = await _read_latest(self._settings, topic)
        except BrokerError as exc:  # only garbage collection depends on it: write anyway, scan next time
            log.warning("state topic scan failed", topic=topic, error=str(exc))
            return
        for part_key, (timestamp_ms, _) in latest.items():
            split = _split_part_key(part_key)
            if split is None:
                continue
            base, generation = split
            manifest = _parse_manifest(latest[base][1]) if base in latest else None
            current = manifest is not None and manifest["generation"] == generation
            due = self._due.setdefault(topic, {}).setdefault(base, {})
            due.setdefault(part_key, 0 if current else timestamp_ms + _ORPHAN_GRACE_MS)
        self._scanned.add(topic)


async def read_state(settings: KafkaSettings, topic: str, *, timeout_s: float = 30) -> dict[bytes, bytes]:
    """Latest value per key of the state topic, read from the beginning to the current end.

    Values written in parts come back whole, under their own key; part keys are not returned.
    A manifest whose parts are missing or fail its checksum raises :class:`BrokerError` (not
    retriable) rather than restoring something else.
    """
    latest = await _read_latest(settings, topic, timeout_s=timeout_s)
    assembler = StateAssembler()
    state: dict[bytes, bytes] = {}
    # Parts first: each manifest then finds the parts it names.
    for key, (_, value) in sorted(latest.items(), key=lambda item: _PART_MARK not in item[0]):
        result = assembler.add(key, value)
        if result is None:
            continue
        if result.value is None:
            error = BrokerError(f"state topic {topic!r}: {key!r} names {result.detail}")
            error.retriable = False
            raise error
        state[key] = result.value
    return state


async def _read_latest(settings: KafkaSettings, topic: str, *, timeout_s: float = 30) -> dict[bytes, tuple[int, bytes]]:
    """``{key: (timestamp_ms, value)}`` of the latest record per key of a compacted topic (tombstones drop keys)."""
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **STATE_FETCH_OPTIONS,
        **client_options(settings),
    )
    with translate_errors("state consumer start"):
        await asyncio.wait_for(consumer.start(), timeout_s)
    state: dict[bytes, tuple[int, bytes]] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return state
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        with translate_errors("state end offsets"):
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"reading state topic {topic!r} timed out after {timeout_s}s")
            with translate_errors("state fetch"):
                batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                for m in messages:
                    if m.key is None:
                        continue
                    if m.value is None:
                        state.pop(m.key, None)
                    else:
                        state[m.key] = (m.timestamp, m.value)
    finally:
        await consumer.stop()
    return state


async def follow_state(
    settings: KafkaSettings,
    topic: str,
    on_record: Callable[[bytes, bytes], None],
    stop: asyncio.Event,
    *,
    poll_ms: int = 1000,
) -> None:
    """Call ``on_record(key, value)`` for every new value of the state topic until ``stop``.

    Starts at the topic's end. A value written in parts is passed on whole when its manifest
    arrives; one whose parts this follower did not all see (it started half-way) is skipped
    with a warning: the next commit brings a whole one.
    """
    assembler = StateAssembler()
    records = tail_topic(settings, topic, stop, what="state follower", poll_ms=poll_ms, **STATE_FETCH_OPTIONS)
    async with aclosing(records):
        async for m in records:
            result = assembler.add(m.key, m.value) if m.key is not None else None
            if result is None:
                continue
            if result.value is None:
                log.warning("state value skipped: not all its parts seen", key=m.key.decode(errors="replace"))
                continue
            on_record(result.key, result.value)
