"""An arrival batch's placement as events: against the current snapshot, beside recent arrivals.

Before the first clustering every arrival is ``unassigned``. After it, the pure rule
(:class:`~streamer.core.arrivals.ArrivalAssigner`) places each arrival; this turns its outcome
into the arrival events, the ``emerging`` events of earlier arrivals a new topic took in, and
the ``created`` events of those topics.
"""

from __future__ import annotations

import numpy as np

from streamer.core.arrivals import ArrivalAssigner
from streamer.core.tracking import ClusterRegistry
from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    AssignmentStatus,
    ClusterEvent,
)
from streamer.domain.headline import NOISE, Headline
from streamer.service.snapshots import SnapshotHolder

__all__ = ["ArrivalPlacement"]


class ArrivalPlacement:
    """Places arrivals against the holder's current snapshot and builds their events."""

    def __init__(self, holder: SnapshotHolder, assigner: ArrivalAssigner, registry: ClusterRegistry | None) -> None:
        self._holder = holder
        self._assigner = assigner
        self._registry = registry

    def place(
        self, headlines: list[Headline], found: list[list[str]], sims: np.ndarray
    ) -> tuple[list[AssignmentEvent], list[AssignmentEvent], list[ClusterEvent]]:
        """Arrival events, events of earlier arrivals an emerging topic took in, and those topics' created events."""
        live = self._holder.current
        if live is None:
            unassigned = [
                AssignmentEvent.make(
                    headline=h,
                    cluster_id=NOISE,
                    status=AssignmentStatus.UNASSIGNED,
                    probability=0.0,
                    run_id=0,
                    reason=AssignmentReason.ARRIVAL,
                )
                for h in headlines
            ]
            return unassigned, [], []
        run_id = live.snapshot.run_id
        outcome = self._assigner.assign(live.snapshot, live.stable_ids, headlines, found, sims)
        events = [
            AssignmentEvent.for_cluster(
                headline=h, cluster_id=p.cluster_id, probability=p.probability, run_id=run_id, reason=AssignmentReason.ARRIVAL
            )
            for h, p in zip(headlines, outcome.placements, strict=True)
        ]
        moved = [
            AssignmentEvent.for_cluster(
                headline=h, cluster_id=cid, probability=0.0, run_id=run_id, reason=AssignmentReason.EMERGING
            )
            for h, cid in outcome.moved
        ]
        started = [self._registry.minted_event(cid) for cid in outcome.started] if self._registry is not None else []
        return events, moved, started
