"""What a topology's output topics say about its ids, tallied one way for the test and the bench.

``tests/integration/test_topology.py`` asserts on these tallies and ``bench/topology.py``
counts from them (``lost``, ``duplicate_arrival_events``, ``ids_reused``), so the two agree
on what a reused id or a second arrival event is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from streamer.domain.events import AssignmentEvent, ClusterEvent

__all__ = ["IdAudit", "audit_ids"]


@dataclass
class IdAudit:
    #: headline id -> the distinct event ids of its ``arrival`` events (one when redeliveries copy it).
    arrival_ids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    #: cluster id -> (run id, exemplar) of its ``created`` events (one when copies re-send one event).
    created: dict[int, set[tuple[int, str | None]]] = field(default_factory=lambda: defaultdict(set))
    #: run id -> leader epochs stamped on its (non-emerging) cluster events (one per run).
    epochs_of_run: dict[int, set[int]] = field(default_factory=lambda: defaultdict(set))


def audit_ids(assignments: Iterable[AssignmentEvent], lifecycle: Iterable[ClusterEvent]) -> IdAudit:
    audit = IdAudit()
    for e in assignments:
        if e.reason == "arrival":
            audit.arrival_ids[e.headline_id].add(e.event_id)
    for c in lifecycle:
        if c.type == "created":
            audit.created[c.cluster_id].add((c.run_id, c.exemplar_id))
        if not c.emerging and c.leader_epoch is not None:
            audit.epochs_of_run[c.run_id].add(c.leader_epoch)
    return audit
