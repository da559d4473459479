"""The ports: what the services need from the outside world, as Protocols.

The adapters (``streamer.adapters``) implement them; the services (``streamer.service``) and
batch mode depend only on them. :class:`Arrivals` is what the ingest loop hands the
re-clusterer's window after each batch.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.domain.headline import Headline, RawRecord


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit length; ``progress`` draws a progress bar
        (batch mode on a terminal). Blocking: call it off the event loop."""
        ...


@runtime_checkable
class VectorStore(Protocol):
    """Keeps one vector (and its headline fields) per headline id. All methods block."""

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None: ...

    def search(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        """For each query: neighbour ids and similarities, best first (ragged ids, (nq, limit) sims padded with -inf)."""
        ...

    def fetch_all(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Every stored id, its vector (n, dim) and its scalar fields."""
        ...

    def ids_since(self, ingested_at_ms: int) -> list[str]:
        """Ids of rows ingested at or after the given time (no vectors)."""
        ...

    def fetch_rows(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """The given rows: ids found, their vectors (n, dim) and scalar fields."""
        ...

    def delete(self, ids: list[str]) -> None: ...

    def count(self) -> int: ...


@runtime_checkable
class StagingStore(Protocol):
    """A store whose searches can see a batch before it is durable (Milvus Lite's search mirror).

    The ingest loop then publishes a batch's events once it is searchable, and writes it to
    Milvus and commits its offsets behind, in order (``streamer.service.ingest``).
    """

    def stage(self, headlines: list[Headline], vectors: np.ndarray) -> None: ...

    def write_staged(self, headlines: list[Headline], vectors: np.ndarray) -> None: ...


@runtime_checkable
class HeadlineSource(Protocol):
    """Where headline messages come from; offsets are committed explicitly after processing."""

    #: Changes whenever partitions are revoked or assigned: records fetched under an older
    #: generation may be delivered again and must not be committed.
    generation: int
    #: Held while a batch is finished; a rebalance waits for it before giving partitions up.
    batch_lock: AbstractAsyncContextManager[Any]

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Await ``hook`` (under ``batch_lock``) before partitions are given up."""
        ...

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]: ...

    async def commit(self, next_offsets: dict[tuple[str, int], int]) -> None: ...

    async def lag(self) -> dict[tuple[str, int], int]: ...

    async def probe(self) -> None:
        """Ask the broker something; raises when it does not answer (readiness while idle)."""
        ...


@runtime_checkable
class EventSink(Protocol):
    """Where events go. Every method returns only once the broker acknowledged all messages."""

    async def send_assignments(self, events: Sequence[AssignmentEvent]) -> None: ...

    async def send_cluster_events(self, events: Sequence[ClusterEvent]) -> None: ...

    async def dead_letter(self, record: RawRecord, reason: str, error_type: str) -> None: ...

    async def send_state(self, topic: str, key: bytes, value: bytes | None) -> None: ...


@dataclass(frozen=True)
class Arrivals:
    """What the window needs to know about a processed batch."""

    headlines: list[Headline]
    vectors: np.ndarray
    neighbour_ids: list[list[str]]
    neighbour_sims: np.ndarray
    unplaced: int = 0  # arrivals published as noise or unassigned: a sign of emerging topics


class ArrivalListener(Protocol):
    def on_arrivals(self, arrivals: Arrivals) -> None: ...


@dataclass(frozen=True)
class PublishedArrivals:
    """A processed batch as an ingest replica hands it to the re-clusterer in another process:
    the arrivals, and the cluster each arrival event published (NOISE, UNASSIGNED or an id)."""

    arrivals: Arrivals
    published: list[int]


class ArrivalForwarder(Protocol):
    """Hands a batch to the re-clusterer in another process; returns once it is durable."""

    async def forward(self, batch: PublishedArrivals) -> None: ...


