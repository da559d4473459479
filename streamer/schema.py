"""Data types that cross module and process boundaries, and the Protocols of the adapters.

- :class:`HeadlineIn` validates one input message (Kafka JSON or a file row).
- :class:`Headline` is the validated, immutable form the core works with.
- :class:`AssignmentEvent` and :class:`ClusterEvent` are what streamer publishes;
  their JSON is the public contract (``schema_version`` bumps on breaking change).
- :class:`Embedder`, :class:`VectorStore` are the roles adapters play.

No I/O here. Event ids are deterministic (UUIDv5 of what the event says) so a
consumer can drop duplicates produced by an at-least-once redelivery.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator

__all__ = [
    "NOISE",
    "SCHEMA_VERSION",
    "MAX_TITLE_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "HeadlineIn",
    "Headline",
    "AssignmentStatus",
    "AssignmentReason",
    "AssignmentEvent",
    "ClusterEventType",
    "ClusterEvent",
    "RawRecord",
    "Embedder",
    "VectorStore",
    "HeadlineSource",
    "EventSink",
    "content_id",
    "to_epoch_ms",
    "now_ms",
]

NOISE = -1
SCHEMA_VERSION = 1
MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 1000
MAX_DESCRIPTION_CHARS = 10_000
_EVENT_NAMESPACE = uuid.UUID("6f1b2f52-2f52-4c1e-9d0e-5e7a8a0c7d11")

# Timestamps outside this range are certainly wrong (year 1970 .. 2200) and are refused.
_MIN_EPOCH_MS = 0
_MAX_EPOCH_MS = 7_258_118_400_000


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return int(datetime.now(UTC).timestamp() * 1000)


def to_epoch_ms(value: Any) -> int | None:
    """Parse a timestamp: epoch s/ms (int, float or digits), ISO-8601, or 'YYYY-MM-DD HH:MM:SS+00'.

    >>> to_epoch_ms("2024-04-25 18:24:04+00")
    1714069444000
    >>> to_epoch_ms(1394470370698)
    1394470370698
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    elif isinstance(value, int | float) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        # Seconds and milliseconds are told apart by magnitude (1e11 s is the year 5138).
        try:
            number = float(value)
            ms = int(number * 1000) if abs(number) < 1e11 else int(number)
        except OverflowError:  # Infinity, 1e400, a 400-digit integer: pydantic only catches ValueError
            raise ValueError(f"timestamp {str(value)[:40]!r} is outside 1970..2200") from None
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        if len(text) >= 3 and text[-3] in "+-" and text[-2:].isdigit() and ":" not in text[-6:]:
            text += ":00"  # '...+00' -> '...+00:00'
        dt = datetime.fromisoformat(text)
        ms = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
    else:
        raise ValueError(f"cannot read a timestamp from {type(value).__name__}")
    if not _MIN_EPOCH_MS <= ms <= _MAX_EPOCH_MS:
        raise ValueError(f"timestamp {value!r} is outside 1970..2200")
    return ms


def content_id(title: str, description: str | None) -> str:
    """Stable id for a headline that came without one: a hash of its content."""
    digest = hashlib.sha256(f"{title}\n{description or ''}".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


_Title = Annotated[str, BeforeValidator(_strip), StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]


def _optional_text(max_chars: int) -> Any:
    """An optional string of at most ``max_chars``; blank strings become None."""
    return Annotated[
        Annotated[str, StringConstraints(max_length=max_chars)] | None, BeforeValidator(_empty_to_none)
    ]


class HeadlineIn(BaseModel):
    """One incoming headline message. Unknown fields are ignored; types are strict.

    ``published_at`` accepts epoch seconds or milliseconds, or an ISO-8601 string.
    """

    model_config = ConfigDict(extra="ignore", strict=False, frozen=True)

    id: Annotated[str, BeforeValidator(_strip), StringConstraints(min_length=1, max_length=MAX_ID_CHARS)] | None = (
        None
    )
    title: _Title
    description: _optional_text(MAX_DESCRIPTION_CHARS) = None
    published_at: int | None = None
    source: _optional_text(512) = None
    url: _optional_text(4096) = None
    language: _optional_text(32) = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: Any) -> Any:
        # Numeric ids (CSV ID columns) are accepted and kept as text; other types are refused.
        if isinstance(value, bool) or not isinstance(value, str | int | None):
            raise ValueError("id must be a string or an integer")
        return str(value) if isinstance(value, int) else value

    @field_validator("title", "description", "source", "url", "language", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if isinstance(value, str) and ("\x00" in value or "\ufffd" in value):
            raise ValueError("contains NUL or undecodable bytes")
        return value

    @field_validator("published_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> int | None:
        return to_epoch_ms(value)

    def to_headline(self, *, ingested_at_ms: int | None = None) -> Headline:
        """The validated headline, with a content hash as id when the message had none."""
        return Headline(
            id=self.id or content_id(self.title, self.description),
            title=self.title,
            description=self.description,
            published_at_ms=self.published_at,
            source=self.source,
            url=self.url,
            language=self.language,
            ingested_at_ms=ingested_at_ms if ingested_at_ms is not None else now_ms(),
        )


@dataclass(frozen=True, slots=True)
class Headline:
    """A validated headline. ``text`` is what gets embedded: title, then description."""

    id: str
    title: str
    description: str | None = None
    published_at_ms: int | None = None
    source: str | None = None
    url: str | None = None
    language: str | None = None
    ingested_at_ms: int = field(default_factory=now_ms)

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.description}" if self.description else self.title

    @property
    def event_time_ms(self) -> int:
        """Time used by the window: published_at when known, else arrival time."""
        return self.published_at_ms if self.published_at_ms is not None else self.ingested_at_ms


class AssignmentStatus(StrEnum):
    ASSIGNED = "assigned"
    NOISE = "noise"
    UNASSIGNED = "unassigned"  # no clustering exists yet


class AssignmentReason(StrEnum):
    ARRIVAL = "arrival"  # approximate assignment when the headline arrived
    RECLUSTER = "recluster"  # a re-clustering run moved the headline
    EMERGING = "emerging"  # a new topic formed around the headline between runs (streamer.arrivals)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    emitted_at_ms: int = Field(default_factory=now_ms)

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class AssignmentEvent(_Event):
    """Which cluster a headline belongs to, as of clustering run ``run_id``.

    ``cluster_id`` is the stable topic id (``NOISE``/-1 for noise and before the
    first clustering); ``probability`` is the HDBSCAN membership strength in [0, 1].
    """

    headline_id: str
    cluster_id: int
    status: AssignmentStatus
    probability: float = Field(ge=0.0, le=1.0)
    run_id: int = Field(ge=0, description="Clustering run the assignment comes from (0 = none yet).")
    reason: AssignmentReason
    title: str
    published_at_ms: int | None = None
    #: The headline's outlet, when the message named one (added in place: optional, so schema_version stays 1).
    source: str | None = None

    @classmethod
    def make(
        cls,
        *,
        headline: Headline,
        cluster_id: int,
        status: AssignmentStatus,
        probability: float,
        run_id: int,
        reason: AssignmentReason,
    ) -> AssignmentEvent:
        event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"assign|{headline.id}|{run_id}|{cluster_id}|{reason}"))
        return cls(
            event_id=event_id,
            headline_id=headline.id,
            cluster_id=cluster_id,
            status=status,
            probability=float(min(1.0, max(0.0, probability))),
            run_id=run_id,
            reason=reason,
            title=headline.title,
            published_at_ms=headline.published_at_ms,
            source=headline.source,
        )


    @classmethod
    def for_cluster(
        cls, *, headline: Headline, cluster_id: int, probability: float, run_id: int, reason: AssignmentReason
    ) -> AssignmentEvent:
        """An event for a clustering outcome: status and probability follow from ``cluster_id``
        (``NOISE`` -> status noise, probability 0)."""
        noise = cluster_id == NOISE
        return cls.make(
            headline=headline,
            cluster_id=cluster_id,
            status=AssignmentStatus.NOISE if noise else AssignmentStatus.ASSIGNED,
            probability=0.0 if noise else probability,
            run_id=run_id,
            reason=reason,
        )


class ClusterEventType(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    MERGED = "merged"
    SPLIT = "split"
    EXPIRED = "expired"


class ClusterEvent(_Event):
    """A change in a topic's life, keyed by ``cluster_id``.

    - created: a new id; ``split_from`` is set when it was carved out of an existing cluster;
      ``emerging`` when the ingest loop started it between runs from a few close arrivals
      (no keywords yet: the next run confirms it with ``updated``, or merges or expires it).
    - updated: size, keywords or exemplar changed.
    - merged: ``merged_from`` ids were absorbed into ``cluster_id``.
    - split: ``cluster_id`` kept part of its members and ``split_into`` holds the new ids.
    - expired: ``cluster_id`` no longer exists (its members left the window or dissolved into noise).
    """

    type: ClusterEventType
    cluster_id: int
    run_id: int
    size: int = Field(ge=0)
    keywords: list[str] = Field(default_factory=list)
    exemplar_id: str | None = None
    exemplar_title: str | None = None
    persistence: float | None = None
    merged_from: list[int] = Field(default_factory=list)
    split_from: int | None = None
    split_into: list[int] = Field(default_factory=list)
    emerging: bool = False

    @classmethod
    def make(cls, *, type: ClusterEventType, cluster_id: int, run_id: int, **fields: Any) -> ClusterEvent:
        event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"cluster|{type}|{cluster_id}|{run_id}"))
        return cls(event_id=event_id, type=type, cluster_id=cluster_id, run_id=run_id, **fields)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    @property
    def dim(self) -> int: ...

    @property
    def name(self) -> str: ...

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit length. Blocking: call it off the event loop."""
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
    Milvus and commits its offsets behind, in order (``streamer.pipeline``).
    """

    def stage(self, headlines: list[Headline], vectors: np.ndarray) -> None: ...

    def write_staged(self, headlines: list[Headline], vectors: np.ndarray) -> None: ...


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed message, as bytes: the pipeline validates it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@runtime_checkable
class HeadlineSource(Protocol):
    """Where headline messages come from; offsets are committed explicitly after processing."""

    #: Changes whenever partitions are revoked or assigned: records fetched under an older
    #: generation may be delivered again and must not be committed.
    generation: int

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
