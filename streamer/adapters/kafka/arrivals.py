"""The arrivals topic: ingest replicas hand each processed batch to the re-clusterer through Kafka.

In the split topology (``--role ingest`` replicas, a ``--role recluster`` leader and standbys)
the re-clusterer is in another process. Each replica writes every batch, after its arrival
events are acknowledged and before its offsets are committed, to ``tracking.arrivals_topic``:
the headlines, their vectors (float16), their neighbour lists from the Milvus search, and the
cluster each arrival event published. The re-clusterer's processes read it from the end at
start (what came before is in Milvus and the state topic), so the leader's window gets what a
colocated ingest loop would hand it, and learns what downstream holds for each arrival.

A redelivered batch is forwarded again; the reader keeps the first copy of a headline.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import numpy as np

from streamer.adapters.kafka.client import tail_topic
from streamer.adapters.kafka.sink import AiokafkaSink
from streamer.config.connections import KafkaSettings
from streamer.domain.headline import Headline
from streamer.domain.ports import Arrivals, PublishedArrivals
from streamer.observability.logs import get_logger

__all__ = ["KafkaArrivalForwarder", "decode_arrivals", "encode_arrivals", "follow_arrivals"]

log = get_logger(__name__)

_VERSION = 1


def _b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array, np.float16).tobytes()).decode()


def encode_arrivals(batch: PublishedArrivals) -> bytes:
    a = batch.arrivals
    n = len(a.headlines)
    sims = np.asarray(a.neighbour_sims, np.float32)
    return json.dumps(
        {
            "v": _VERSION,
            "headlines": [
                {"id": h.id, "title": h.title, "published_at_ms": h.published_at_ms, "source": h.source,
                 "ingested_at_ms": h.ingested_at_ms}
                for h in a.headlines
            ],
            "dim": int(a.vectors.shape[1]) if n else 0,
            "vectors": _b64(a.vectors),
            "neighbours": a.neighbour_ids,
            "sims_shape": list(sims.shape),
            # Unfilled neighbour slots are -inf; float16 keeps that.
            "sims": _b64(sims),
            "published": batch.published,
            "unplaced": a.unplaced,
        },
        separators=(",", ":"),
    ).encode()


def decode_arrivals(value: bytes) -> PublishedArrivals:
    """Raises ValueError on a record this version cannot read."""
    try:
        data: dict[str, Any] = json.loads(value)
        if data.get("v") != _VERSION:
            raise ValueError(f"unknown arrivals record version {data.get('v')!r}")
        headlines = [Headline(**h) for h in data["headlines"]]
        n, dim = len(headlines), int(data["dim"])
        vectors = np.frombuffer(base64.b64decode(data["vectors"]), np.float16).astype(np.float32).reshape(n, dim)
        sims = np.frombuffer(base64.b64decode(data["sims"]), np.float16).astype(np.float32)
        sims = sims.reshape(tuple(int(x) for x in data["sims_shape"]))
        neighbours = [list(ids) for ids in data["neighbours"]]
        published = [int(c) for c in data["published"]]
        if not len(neighbours) == len(published) == n or (n and sims.shape[0] != n):
            raise ValueError(f"{n} headlines but {len(neighbours)} neighbour lists, {len(published)} published, "
                             f"{sims.shape[0] if sims.ndim else 0} similarity rows")
        arrivals = Arrivals(headlines, vectors, neighbours, sims, int(data["unplaced"]))
        return PublishedArrivals(arrivals, published)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"unreadable arrivals record: {exc}") from exc


class KafkaArrivalForwarder:
    """Writes each batch to the arrivals topic through the service's producer (acks=all)."""

    def __init__(self, sink: AiokafkaSink, topic: str) -> None:
        self._sink = sink
        self._topic = topic

    async def forward(self, batch: PublishedArrivals) -> None:
        if batch.arrivals.headlines:
            key = batch.arrivals.headlines[0].id.encode()
            await self._sink.send_records(self._topic, [(key, encode_arrivals(batch))])


async def follow_arrivals(
    settings: KafkaSettings,
    topic: str,
    on_batch: Callable[[PublishedArrivals], Awaitable[None]],
    stop: asyncio.Event,
    *,
    pinned: asyncio.Event | None = None,
    poll_ms: int = 500,
) -> None:
    """Call ``on_batch`` for every batch written to ``topic`` from now on, until ``stop``.

    ``pinned`` is set once "now" is fixed (the end offsets read): every batch written after
    that reaches ``on_batch``.
    """
    records = tail_topic(
        settings, topic, stop, what="arrivals consumer", poll_ms=poll_ms, pinned=pinned,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    async with aclosing(records):
        async for m in records:
            try:
                batch = decode_arrivals(m.value)
            except ValueError as exc:
                log.error("arrivals record skipped", offset=m.offset, error=str(exc)[:300])
                continue
            await on_batch(batch)
