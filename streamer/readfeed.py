"""Feeding the read model: from the Kafka output topics, or from a finished run's folder.

- :class:`KafkaFeed` reads ``headline-assignments`` and ``cluster-events`` from the beginning
  of retention (no consumer group: every replica reads everything, nothing is committed, a
  restart rebuilds the model) and keeps following them. It knows when it has caught up with
  the end offsets seen at start (readiness). Events are decoded and applied on the event
  loop in chunks of ``chunk`` with a yield between chunks, so requests never wait for more
  than one chunk (a few ms).
- :func:`load_folder` applies the events ``make demo-stream`` saved (``events/*.jsonl``), or
  turns a batch report (``assignments.csv`` + ``clusters.json`` of ``streamer cluster``) into
  the events a single run would have published.

Events are read leniently: fields this version does not know are ignored (a newer producer
may add optional ones without bumping ``schema_version``); an event that does not validate is
logged and skipped, never fatal. This module is the read side's Kafka adapter: besides
:mod:`streamer.kafka_io` (whose connection options it reuses) the only one importing aiokafka.
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamer.config import KafkaSettings
from streamer.errors import BrokerError, InputError
from streamer.logs import get_logger
from streamer.readmodel import ReadModel
from streamer.schema import AssignmentEvent, ClusterEvent, ClusterEventType, now_ms

__all__ = ["FeedProgress", "KafkaFeed", "decode_event", "load_folder", "EVENT_FILES"]

log = get_logger(__name__)

#: File names ``make demo-stream`` saves the output topics under (``<out>/events/``).
EVENT_FILES = {"assignment": "headline-assignments.jsonl", "cluster": "cluster-events.jsonl"}


def decode_event(kind: str, value: bytes | str) -> AssignmentEvent | ClusterEvent:
    """One event from its JSON; unknown fields are dropped first. Raises ValueError when invalid."""
    model: type[AssignmentEvent] | type[ClusterEvent] = AssignmentEvent if kind == "assignment" else ClusterEvent
    try:
        return model.model_validate_json(value)  # the common case, in pydantic-core alone
    except ValidationError:
        pass  # perhaps fields of a newer producer: drop them and validate again
    data = json.loads(value)
    if not isinstance(data, dict):
        raise ValueError("an event is a JSON object")
    return model.model_validate({k: v for k, v in data.items() if k in model.model_fields})


@dataclass
class FeedProgress:
    """What the feed has done; read by /readyz and /api/status."""

    source: str
    caught_up: bool = False
    applied: int = 0
    rejected: int = 0


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

        from streamer.kafka_io import client_options

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
                        self._apply(kind, [m.value for m in messages[start : start + self._chunk]])
                        await asyncio.sleep(0)  # let requests in between chunks
                if not self.progress.caught_up and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                    self.progress.caught_up = True
                    log.info("read feed caught up", events=self.progress.applied, topics=self._model.live_topic_count())
        finally:
            await consumer.stop()

    def _apply(self, kind: str, values: list[bytes | None]) -> None:
        for value in values:
            if value is None:
                continue
            try:
                event = decode_event(kind, value)
            except (ValueError, ValidationError) as exc:
                self.progress.rejected += 1
                log.warning("event skipped: not a valid event", kind=kind, error=str(exc)[:200])
                continue
            self._model.apply(event)
            self.progress.applied += 1


def load_folder(path: Path, model: ReadModel) -> FeedProgress:
    """Apply a finished run's events to ``model``: saved topics if there are any, else the batch report."""
    progress = FeedProgress(source=f"folder {path}", caught_up=True)
    events_dir = path / "events"
    if any((events_dir / name).exists() for name in EVENT_FILES.values()):
        streams = [_read_jsonl(events_dir / name, kind) for kind, name in EVENT_FILES.items()]
        # The two topics interleaved by when each event was emitted: the order a live reader saw.
        for event in heapq.merge(*streams, key=lambda e: e.emitted_at_ms):
            model.apply(event)
            progress.applied += 1
    elif (path / "assignments.csv").exists() and (path / "clusters.json").exists():
        for event in _batch_events(path):
            model.apply(event)
            progress.applied += 1
    else:
        raise InputError(
            f"{path}: no events/{EVENT_FILES['assignment']} (make demo-stream) and no assignments.csv + "
            "clusters.json (streamer cluster): nothing to serve"
        )
    log.info("folder loaded", path=str(path), events=progress.applied, topics=model.live_topic_count())
    return progress


def _read_jsonl(path: Path, kind: str) -> Iterator[AssignmentEvent | ClusterEvent]:
    """Events of one saved topic in file order, each stream sorted by emission for the merge."""
    if not path.exists():
        return iter(())
    events = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(decode_event(kind, line))
            except (ValueError, ValidationError) as exc:
                raise InputError(f"{path}:{number}: not a valid {kind} event: {str(exc)[:200]}") from exc
    events.sort(key=lambda e: e.emitted_at_ms)  # stable: one headline's events keep their order
    return iter(events)


def _batch_events(path: Path) -> Iterator[AssignmentEvent | ClusterEvent]:
    """The events one run of the batch report amounts to: created per cluster, one assignment per row."""
    try:
        clusters: list[dict[str, Any]] = json.loads((path / "clusters.json").read_text(encoding="utf-8"))["clusters"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path / 'clusters.json'}: cannot read the clusters: {exc}") from exc
    emitted = now_ms()
    for c in clusters:
        yield ClusterEvent.make(
            type=ClusterEventType.CREATED,
            cluster_id=int(c["cluster_id"]),
            run_id=1,
            size=int(c["size"]),
            keywords=list(c["keywords"]),
            exemplar_id=c["exemplar_id"],
            exemplar_title=c["exemplar_title"],
            persistence=float(c["persistence"]),
            emitted_at_ms=emitted,
        )
    with (path / "assignments.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cluster = int(row["cluster"])
            yield AssignmentEvent(
                event_id=f"batch|{row['id']}",
                headline_id=row["id"],
                cluster_id=cluster,
                status="noise" if cluster < 0 else "assigned",
                probability=float(row["probability"]),
                run_id=1,
                reason="recluster",
                title=row["title"],
                emitted_at_ms=emitted,
            )
