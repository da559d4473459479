"""What a re-clustering run leaves on the state topic, and how a leader takes it back.

A run writes its registry record *before* it publishes anything: the record holds the id
counter, the run id, the clusters with their members, the leader's epoch, and the run's own
events (an outbox). A crash after the write and before (or during) publishing is then
repaired by the next leader, which re-sends the outbox (same event ids, so consumers drop the
copies), and no id or run id can be handed out twice: what a published event names was
persisted first. The snapshot follows in its own record (ingest followers take it from there).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from streamer.core.tracking import ClusterRegistry
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.observability.logs import get_logger
from streamer.service.leadership import LEADER_KEY, Claim, decode_claim
from streamer.service.snapshots import (
    STATE_ID_COUNTER_KEY,
    STATE_REGISTRY_KEY,
    STATE_SNAPSHOT_KEY,
    SnapshotHolder,
    decode_state,
    snapshot_from_state,
)

__all__ = ["Restored", "registry_record", "restore_state"]

log = get_logger(__name__)


def registry_record(
    registry: ClusterRegistry, epoch: int, cluster_events: list[ClusterEvent], assignments: list[AssignmentEvent]
) -> dict[str, Any]:
    """The registry's state with the epoch that wrote it and the run's events (its outbox)."""
    return {
        **registry.to_state(),
        "epoch": epoch,
        "outbox": {
            "run_id": registry.run_id,
            "cluster_events": [e.model_dump(mode="json") for e in cluster_events],
            "assignments": [e.model_dump(mode="json") for e in assignments],
        },
    }


@dataclass
class Restored:
    """What :func:`restore_state` brought back beyond the registry and snapshot themselves."""

    #: The highest epoch the state names (registry record, leader claim): a new leader claims above it.
    epoch: int = 0
    #: Emerging topics minted after the last run (their created events are re-sent).
    emerging: list[int] = field(default_factory=list)
    #: The last run's events, to re-send in case the run died before publishing them all.
    cluster_events: list[ClusterEvent] = field(default_factory=list)
    assignments: list[AssignmentEvent] = field(default_factory=list)
    #: The latest leader claim on the state topic, if any.
    claim: Claim | None = None
    #: Placements a split-topology leader published since its last run that no snapshot covers:
    #: re-sent by the next leader (it may have died between persisting and publishing them).
    placed: list[AssignmentEvent] = field(default_factory=list)


def restore_state(
    state: dict[bytes, bytes], registry: ClusterRegistry, holder: SnapshotHolder, *, owner: str = ""
) -> Restored:
    """Load the state topic's latest values into ``registry`` and ``holder``.

    The registry is replaced by the record's (a takeover must not mint from an old counter);
    the holder takes the snapshot when it is newer than its own and remembers what was
    published for its headlines (noise included: a restart does not re-publish it). ``owner``
    is the reader's own claim owner (see below).
    """
    restored = Restored()
    claim = decode_claim(state[LEADER_KEY]) if LEADER_KEY in state else None
    restored.claim = claim
    if claim is not None:
        restored.epoch = claim.epoch
    if STATE_SNAPSHOT_KEY in state:
        live = snapshot_from_state(decode_state(state[STATE_SNAPSHOT_KEY]))
        current = holder.current
        if current is None or live.snapshot.run_id >= current.snapshot.run_id:
            holder.swap(live)
        holder.seed_from(live)
    record = decode_state(state[STATE_REGISTRY_KEY]) if STATE_REGISTRY_KEY in state else None
    if record is not None:
        registry.load_state(record)
        restored.epoch = max(restored.epoch, int(record.get("epoch", 0)))
    if claim is not None:  # never below what a takeover started from
        registry.next_id = max(registry.next_id, claim.next_id)
        registry.run_id = max(registry.run_id, claim.run_id)
    if record is not None:
        holder.last_assigned.update(registry.cluster_of())  # placements since the run
        outbox = record.get("outbox") or {}
        # A record below another leader's latest claim is a deposed leader's late write: its run's
        # events may never have been published, and must not be (that leader may reuse the run id).
        # Below our own fresh claim it is the last leader's, and its outbox ours to finish.
        current = claim is None or claim.owner == owner or int(record.get("epoch", 0)) >= claim.epoch
        if current and int(outbox.get("run_id", -1)) == registry.run_id:
            restored.cluster_events = [ClusterEvent.model_validate(e) for e in outbox.get("cluster_events", [])]
            restored.assignments = [AssignmentEvent.model_validate(e) for e in outbox.get("assignments", [])]
            holder.record_published(restored.assignments)
    if STATE_ID_COUNTER_KEY in state:  # ids minted for emerging topics after the last run
        minted = json.loads(state[STATE_ID_COUNTER_KEY])
        registry.restore_emerging(minted)
        if int(minted.get("run_id", -1)) >= registry.run_id:
            restored.emerging = [
                int(c["id"]) for c in minted.get("emerging", [])
                if int(c["id"]) in registry.clusters and registry.clusters[int(c["id"])].emerging
            ]
        holder.last_assigned.update(
            {hid: cid for cid in restored.emerging for hid in registry.clusters[cid].members}
        )
        # What a split-topology leader published that no run had taken in yet (emerging and
        # follow placements); a headline the snapshot holds has the run's verdict instead.
        covered = holder.current.snapshot.position if holder.current is not None else {}
        for raw in minted.get("events", []):
            event = AssignmentEvent.model_validate(raw)
            if event.headline_id not in covered:
                holder.remember(event.headline_id, event.cluster_id)
                registry.record(event.cluster_id, [event.headline_id])
                restored.placed.append(event)
    log.info(
        "state restored",
        run_id=registry.run_id,
        clusters=len(registry.clusters),
        emerging=len(restored.emerging),
        epoch=restored.epoch,
        outbox=len(restored.cluster_events) + len(restored.assignments),
    )
    return restored
