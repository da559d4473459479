"""What streamer publishes: assignment and cluster lifecycle events (the public contract).

Their JSON is the contract (``schema_version`` bumps on a breaking change). Event ids are
deterministic (UUIDv5 of what the event says) so a consumer can drop the duplicates an
at-least-once redelivery produces.
"""

from __future__ import annotations

import json
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streamer.domain.headline import NOISE, Headline, now_ms

SCHEMA_VERSION = 1


_EVENT_NAMESPACE = uuid.UUID("6f1b2f52-2f52-4c1e-9d0e-5e7a8a0c7d11")


class AssignmentStatus(StrEnum):
    ASSIGNED = "assigned"
    NOISE = "noise"
    UNASSIGNED = "unassigned"  # no clustering exists yet


class AssignmentReason(StrEnum):
    ARRIVAL = "arrival"  # approximate assignment when the headline arrived
    RECLUSTER = "recluster"  # a re-clustering run moved the headline
    EMERGING = "emerging"  # a new topic formed around the headline between runs (streamer.core.arrivals)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str
    emitted_at_ms: int = Field(default_factory=now_ms)
    #: The re-clusterer leader's epoch for events a leader publishes (runs, emerging topics); it
    #: grows with every takeover, so a consumer may drop an event whose epoch is below the highest
    #: it has seen (a deposed leader's). None on arrival events. Optional: schema_version stays 1.
    leader_epoch: int | None = None

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
        if reason == AssignmentReason.ARRIVAL:
            # One arrival per headline: a redelivered copy (placed against a newer snapshot, perhaps
            # by another replica) carries the same id, so a consumer keeps exactly one.
            event_id = str(uuid.uuid5(_EVENT_NAMESPACE, f"arrival|{headline.id}"))
        else:
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


