"""Kafka adapter (aiokafka): headline source, event sink, dead-letter topic, topic admin.

- :class:`AiokafkaSource` reads the input topic in a consumer group with auto-commit
  off; :meth:`AiokafkaSource.commit` is called by the pipeline only after Milvus and
  the event produce acknowledged the batch (at-least-once). A rebalance waits for the
  batch in flight (``batch_lock``) so a revoked partition's progress is committed first.
- :class:`AiokafkaSink` owns one idempotent producer (acks=all) and writes
  assignment events, cluster lifecycle events (CloudEvents binary mode headers) and
  dead letters (original key and bytes, the reason in headers).
- Security settings (SASL PLAIN/SCRAM, SSL) pass through; the password is read from
  its ``SecretStr`` only when the client is built and never logged.

Only this module imports aiokafka.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
)

from streamer.config import KafkaSettings
from streamer.errors import BrokerError, ConfigError
from streamer.logs import get_logger
from streamer.schema import AssignmentEvent, ClusterEvent, RawRecord

__all__ = [
    "AiokafkaSource",
    "AiokafkaSink",
    "ensure_topics",
    "client_options",
    "CE_SOURCE",
    "STATE_MAX_BYTES",
    "STATE_PART_BYTES",
]

log = get_logger(__name__)

CE_SOURCE = "urn:streamer"
#: Largest state-topic record the topic accepts and the state consumers fetch.
STATE_MAX_BYTES = 64 * 1024 * 1024
#: Largest value one state record carries. A larger value (a million-headline window's snapshot
#: is tens of MB) is written as numbered parts of at most this size, then a small manifest under
#: the value's own key (see :meth:`AiokafkaSink.send_state`). Under 1 MiB, so a part fits the
#: broker's default ``max.message.bytes`` and any producer ``max_request_size`` from 1 MiB up.
STATE_PART_BYTES = 960 * 1024
_STATE_FETCH = {"max_partition_fetch_bytes": STATE_MAX_BYTES, "fetch_max_bytes": STATE_MAX_BYTES}
# Part keys: <key> 0x1f "part" 0x1f <generation> 0x1f <index>; 0x1f never occurs in a state key.
_PART_MARK = b"\x1fpart\x1f"
_MANIFEST_MAGIC = b"streamer-state-manifest/1\n"
_STATE_ORPHAN_GRACE_MS = 10 * 60 * 1000
_CE_TYPES = {"assignment": "io.streamer.headline.assignment.v1", "cluster": "io.streamer.cluster.{type}.v1"}


@contextmanager
def _translate_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except BrokerError:
        raise
    except asyncio.CancelledError:
        raise
    except KafkaError as exc:
        error = BrokerError(f"Kafka {operation} failed: {type(exc).__name__}: {exc}")
        auth_failed = isinstance(exc, AuthenticationFailedError | SaslAuthenticationFailed)
        # aiokafka marks its client-side timeout (e.g. a produce batch that found no broker within
        # request_timeout_ms) as not retriable, but it is the very symptom of a broker outage.
        transient = isinstance(exc, KafkaTimeoutError)
        error.retriable = (bool(getattr(exc, "retriable", True)) or transient) and not auth_failed
        raise error from exc


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        # With api_version="auto" aiokafka bootstraps with the legacy SASL framing, and a wrong
        # password only shows as "connection closed". An explicit version (what "auto" detects on
        # any broker since 2.6) makes it use SaslAuthenticate and raise SaslAuthenticationFailed.
        options["api_version"] = "2.6.0"
    if settings.security_protocol.endswith("SSL"):
        try:
            context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
            if settings.ssl_certfile:
                context.load_cert_chain(
                    str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"kafka.ssl_cafile/ssl_certfile/ssl_keyfile: cannot load: {exc}") from exc
        context.check_hostname = settings.ssl_check_hostname
        options["ssl_context"] = context
    return options


async def ensure_topics(settings: KafkaSettings, topics: dict[str, dict[str, Any]], *, timeout_s: float = 30) -> None:
    """Create missing topics: ``{name: {"partitions": int, "config": {...}}}``. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    with _translate_errors("admin connect"):
        await asyncio.wait_for(admin.start(), timeout_s)
    try:
        with _translate_errors("list topics"):
            existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        missing = [
            NewTopic(
                name=name,
                num_partitions=spec.get("partitions", 1),
                replication_factor=spec.get("replication_factor", 1),
                topic_configs=spec.get("config", {}),
            )
            for name, spec in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                with _translate_errors("create topics"):
                    await asyncio.wait_for(admin.create_topics(missing), timeout_s)
            except BrokerError as exc:
                if not isinstance(exc.__cause__, TopicAlreadyExistsError):
                    raise
            log.info("kafka topics created", topics=[t.name for t in missing])
    finally:
        await admin.close()


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
        #: Awaited (under ``batch_lock``) before partitions are given up: the ingest loop's
        #: write-behind commits of batches already published (IngestPipeline.drain_writes).
        self.before_revoke: Callable[[], Awaitable[None]] | None = None

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
        consumer.subscribe(self._topics, listener=_RebalanceListener(self))
        with _translate_errors("consumer start"):
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
        with _translate_errors("fetch"):
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
        with _translate_errors("commit"):
            await self._consumer.commit(owned)

    async def probe(self) -> None:
        """A metadata round trip: an idle consumer would not notice a dead broker otherwise."""
        if self._consumer is None:
            return
        # Bounded by aiokafka's own request_timeout_ms (a dead broker refuses at once); not cancelled from outside.
        with _translate_errors("metadata probe"):
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

    def __init__(self, source: AiokafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Any) -> None:
        async with self._source.batch_lock:
            if self._source.before_revoke is not None:
                try:
                    await self._source.before_revoke()
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
        if assigned:
            log.info("partitions assigned", partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


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
        # Part keys of each state key to delete at a later commit of that key, with the earliest
        # time (ms) that may happen: parts this sink wrote and its first scan of the topic found.
        self._state_parts: dict[str, dict[bytes, dict[bytes, int]]] = {}
        self._state_scanned: set[str] = set()

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
        with _translate_errors("producer start"):
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

    async def _send_all(self, topic: str, messages: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]) -> None:
        """Send and wait for every acknowledgement (acks=all); raises if any failed."""
        if not messages:
            return
        with _translate_errors(f"produce to {topic}"):
            futures = [
                await self._producer.send(topic, value=value, key=key, headers=headers)
                for key, value, headers in messages
            ]
            await asyncio.gather(*futures)

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
        """Set ``key`` of the compacted state topic to ``value`` (``None`` = delete it).

        A value up to :data:`STATE_PART_BYTES` is one record, as it always was. A larger one goes
        out as numbered parts under keys of a fresh generation and, once the broker acknowledged
        every part (acks=all), a small manifest under ``key`` itself (generation, part count,
        size, SHA-256). The manifest is the commit point: :func:`read_state` and
        :func:`follow_state` return the old value or the new one, never a mix, also when this
        process dies half-way or a retry writes a second generation. After the commit the parts
        of the generations it replaced are deleted (tombstones), so compaction reclaims them; a
        failure there is logged and retried at the next commit, never raised.
        """
        if _PART_MARK in key:
            raise ValueError(f"state key {key!r} contains the reserved part marker")
        part_bytes = max(1, min(STATE_PART_BYTES, self._max_request_size - 64 * 1024))
        chunked = value is not None and (len(value) > part_bytes or value.startswith(_MANIFEST_MAGIC))
        if chunked or value is None:
            await self._scan_state_parts(topic)
        due = self._state_parts.setdefault(topic, {}).setdefault(key, {})
        new_keys: set[bytes] = set()
        if value is not None and chunked:
            generation = uuid.uuid4().hex
            parts = [value[i : i + part_bytes] for i in range(0, len(value), part_bytes)]
            keys = [_part_key(key, generation, i) for i in range(len(parts))]
            new_keys = set(keys)
            due.update(dict.fromkeys(keys, 0))  # a failed attempt's parts go at the next commit
            with _translate_errors(f"produce to {topic}"):
                futures = [await self._producer.send(topic, value=part, key=k) for k, part in zip(keys, parts, strict=True)]
                await asyncio.gather(*futures)
            value = _MANIFEST_MAGIC + json.dumps(
                {"generation": generation, "parts": len(parts), "size": len(value), "sha256": hashlib.sha256(value).hexdigest()}
            ).encode()
        with _translate_errors(f"produce to {topic}"):
            await self._producer.send_and_wait(topic, value=value, key=key)
        now_ms = int(time.time() * 1000)
        stale = sorted(k for k, not_before_ms in due.items() if k not in new_keys and not_before_ms <= now_ms)
        if stale:
            try:
                with _translate_errors(f"produce to {topic}"):
                    await asyncio.gather(*[await self._producer.send(topic, value=None, key=k) for k in stale])
                for k in stale:
                    del due[k]
            except BrokerError as exc:
                log.warning("deleting replaced state parts failed; retried at the next commit", topic=topic, error=str(exc))

    async def _scan_state_parts(self, topic: str) -> None:
        """Once per topic: learn which parts on it become garbage once this sink commits their key.

        The parts of each key's current value go at this sink's next commit of that key (which
        replaces it). Parts no manifest uses were left by a writer that died before its commit,
        or belong to another writer's commit in progress (a leadership hand-over): they go at
        the first commit after they are ``_STATE_ORPHAN_GRACE_MS`` old, when no live writer is
        still on them (a commit writes its parts and manifest back to back, in seconds).
        """
        if topic in self._state_scanned:
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
            due = self._state_parts.setdefault(topic, {}).setdefault(base, {})
            due.setdefault(part_key, 0 if current else timestamp_ms + _STATE_ORPHAN_GRACE_MS)
        self._state_scanned.add(topic)


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


def _assemble(key: bytes, manifest: dict[str, Any], parts: dict[bytes, bytes]) -> bytes | None:
    """The value a manifest commits, from its parts; None if one is missing or the checksum fails."""
    chunks = [parts.get(_part_key(key, manifest["generation"], i)) for i in range(int(manifest["parts"]))]
    if any(chunk is None for chunk in chunks):
        return None
    value = b"".join(chunks)  # type: ignore[arg-type]
    if len(value) != manifest["size"] or hashlib.sha256(value).hexdigest() != manifest["sha256"]:
        return None
    return value


async def read_state(settings: KafkaSettings, topic: str, *, timeout_s: float = 30) -> dict[bytes, bytes]:
    """Latest value per key of the state topic, read from the beginning to the current end.

    Values written in parts (:meth:`AiokafkaSink.send_state`) come back whole, under their own
    key; part keys are not returned. A manifest whose parts are missing or do not match its
    checksum raises :class:`BrokerError` (not retriable) rather than restoring something else.
    """
    latest = await _read_latest(settings, topic, timeout_s=timeout_s)
    state: dict[bytes, bytes] = {}
    for key, (_, value) in latest.items():
        if _PART_MARK in key:
            continue
        manifest = _parse_manifest(value)
        if manifest is None:
            state[key] = value
            continue
        parts = {k: v for k, (_, v) in latest.items() if k.startswith(key + _PART_MARK)}
        whole = _assemble(key, manifest, parts)
        if whole is None:
            error = BrokerError(
                f"state topic {topic!r}: {key!r} names {manifest['parts']} parts of generation "
                f"{manifest['generation']} that are missing or fail their checksum"
            )
            error.retriable = False
            raise error
        state[key] = whole
    return state


async def _read_latest(settings: KafkaSettings, topic: str, *, timeout_s: float = 30) -> dict[bytes, tuple[int, bytes]]:
    """``{key: (timestamp_ms, value)}`` of the latest record per key of a compacted topic (tombstones drop keys)."""
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **_STATE_FETCH,
        **client_options(settings),
    )
    with _translate_errors("state consumer start"):
        await asyncio.wait_for(consumer.start(), timeout_s)
    state: dict[bytes, tuple[int, bytes]] = {}
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return state
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        with _translate_errors("state end offsets"):
            ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout_s)
        deadline = asyncio.get_running_loop().time() + timeout_s
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            if asyncio.get_running_loop().time() > deadline:
                raise BrokerError(f"reading state topic {topic!r} timed out after {timeout_s}s")
            with _translate_errors("state fetch"):
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


class LeaderElection:
    """Leadership through Kafka: the group member that owns partition 0 of ``topic`` leads.

    Every instance joins the group ``group_id``; Kafka's group coordinator hands the
    single partition to exactly one live member and moves it when that member dies or
    leaves. The member keeps polling so the coordinator knows it is alive.
    """

    def __init__(self, settings: KafkaSettings, *, topic: str, group_id: str) -> None:
        self._settings = settings
        self._topic = topic
        self._group_id = group_id
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._leading = False

    def is_leader(self) -> bool:
        return self._leading

    async def start(self, *, timeout_s: float = 60) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            **_STATE_FETCH,
            **client_options(self._settings),
        )
        election = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked and election._leading:
                    log.info("re-clusterer leadership lost")
                election._leading = False

            async def on_partitions_assigned(self, assigned: Any) -> None:
                election._leading = any(tp.partition == 0 for tp in assigned)
                if election._leading:
                    log.info("re-clusterer leadership acquired", group=election._group_id)

        consumer.subscribe([self._topic], listener=_Listener())
        with _translate_errors("leader election start"):
            await asyncio.wait_for(consumer.start(), timeout_s)
        self._consumer = consumer
        self._task = asyncio.create_task(self._poll(), name="streamer-leader-election")

    async def _poll(self) -> None:
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:  # the consumer reconnects by itself; keep polling
                log.warning("leader election poll failed", error=str(exc))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        self._leading = False
        if consumer is not None:
            await consumer.stop()


async def follow_state(
    settings: KafkaSettings, topic: str, on_record: Any, stop: asyncio.Event, *, poll_ms: int = 1000
) -> None:
    """Call ``on_record(key, value)`` for every new value of the state topic until ``stop``.

    A value written in parts is reassembled and passed on when its manifest arrives (parts
    buffered meanwhile); one whose parts this follower did not all see (it started half-way)
    is skipped with a warning: the next commit brings a whole one.
    """
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False,
        auto_offset_reset="latest",
        **_STATE_FETCH,
        **client_options(settings),
    )
    with _translate_errors("state follower start"):
        await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        parts: dict[bytes, bytes] = {}
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=poll_ms)
            except KafkaError as exc:
                log.warning("state follower poll failed", error=str(exc))
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for m in messages:
                    if m.key is None:
                        continue
                    if _PART_MARK in m.key:
                        if m.value is None:
                            parts.pop(m.key, None)
                        else:
                            parts[m.key] = m.value
                        continue
                    if m.value is None:
                        continue
                    manifest = _parse_manifest(m.value)
                    if manifest is None:
                        on_record(m.key, m.value)
                        continue
                    prefix = m.key + _PART_MARK
                    whole = _assemble(m.key, manifest, parts)
                    for k in [k for k in parts if k.startswith(prefix)]:
                        del parts[k]
                    if whole is None:
                        log.warning("state value skipped: not all its parts seen", key=m.key.decode(errors="replace"))
                        continue
                    on_record(m.key, whole)
    finally:
        await consumer.stop()


async def produce_messages(
    settings: KafkaSettings, topic: str, messages: Any, *, rate_per_s: float | None = None
) -> int:
    """Publish ``(key, value)`` pairs (an iterable) to ``topic``, optionally paced; returns the count."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **client_options(settings))
    with _translate_errors("producer start"):
        await producer.start()
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = []
    try:
        for key, value in messages:
            if rate_per_s:
                due = started + sent / rate_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            with _translate_errors(f"produce to {topic}"):
                pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        with _translate_errors(f"produce to {topic}"):
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def consume_messages(
    settings: KafkaSettings, topic: str, *, from_beginning: bool, max_messages: int | None, idle_timeout_s: float | None
) -> Any:
    """Yield ``(key, value, headers)`` of ``topic`` (no consumer group); stops after ``max_messages``
    or ``idle_timeout_s`` without new messages."""
    consumer = AIOKafkaConsumer(
        topic,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **client_options(settings),
    )
    with _translate_errors("consumer start"):
        await consumer.start()
    seen = 0
    try:
        while max_messages is None or seen < max_messages:
            timeout_ms = int(idle_timeout_s * 1000) if idle_timeout_s else 1000
            batches = await consumer.getmany(timeout_ms=timeout_ms)
            if not batches and idle_timeout_s:
                return
            for messages in batches.values():
                for m in messages:
                    yield m.key, m.value, tuple(m.headers or ())
                    seen += 1
    finally:
        await consumer.stop()
