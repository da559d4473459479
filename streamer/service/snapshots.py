"""The snapshot ingest assigns against, and its form on the state topic.

:class:`SnapshotHolder` is swapped whole (one reference assignment) by the re-clusterer, or by
a follower when the leader's snapshot arrives; it also remembers the cluster last published
per headline so that only changes are published. The ``encode``/``decode`` functions and the
state keys are the registry's and snapshot's wire form on the compacted state topic.
"""

from __future__ import annotations

import json
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer.core.snapshot import Snapshot
from streamer.domain.events import AssignmentEvent, AssignmentStatus
from streamer.domain.headline import NOISE, UNASSIGNED

#: State-topic key of the registry's id counter and the emerging topics minted since the last run
#: (``ClusterRegistry.emerging_state``), written whenever the ingest loop mints an id.
STATE_ID_COUNTER_KEY = b"next-id"


@dataclass(frozen=True)
class LiveSnapshot:
    """A snapshot plus the stable id of each of its local clusters."""

    snapshot: Snapshot
    stable_ids: np.ndarray

    def stable(self, local: int) -> int:
        return NOISE if local == NOISE else int(self.stable_ids[local])


class SnapshotHolder:
    """The snapshot arrivals are assigned against; replaced whole (an atomic reference swap)."""

    def __init__(self, *, max_tracked: int = 1_000_000) -> None:
        """``max_tracked`` bounds :attr:`last_assigned` (give it a few times the window's size):
        the oldest entries go first, and by then their headlines have left the window."""
        if max_tracked < 1:
            raise ValueError(f"max_tracked must be positive, got {max_tracked}")
        self.current: LiveSnapshot | None = None
        #: Cluster id last published per headline (arrival or re-cluster), to publish only changes;
        #: :data:`UNASSIGNED` for a headline published as "unassigned" (before the first run).
        #: Oldest first; bounded by ``max_tracked`` on every role (an ingest-only follower never expires it).
        self.last_assigned: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked

    def swap(self, live: LiveSnapshot) -> None:
        self.current = live

    def record_published(self, events: Iterable[AssignmentEvent]) -> None:
        """Remember what downstream now holds for each event's headline."""
        for event in events:
            unassigned = event.status == AssignmentStatus.UNASSIGNED
            self.last_assigned[event.headline_id] = UNASSIGNED if unassigned else event.cluster_id
            self.last_assigned.move_to_end(event.headline_id)
        self._trim()

    def remember(self, headline_id: str, cluster_id: int) -> None:
        """What an arrival event published, learnt from elsewhere (another replica's batch)."""
        self.last_assigned[headline_id] = cluster_id
        self.last_assigned.move_to_end(headline_id)
        self._trim()

    def _trim(self) -> None:
        while len(self.last_assigned) > self._max_tracked:
            self.last_assigned.popitem(last=False)

    def published(self, headline_id: str) -> int:
        """What downstream holds for the headline: a cluster id, NOISE, or UNASSIGNED."""
        return self.last_assigned.get(headline_id, UNASSIGNED)

    def seed_from(self, live: LiveSnapshot) -> None:
        """What a run published for each headline of its window (a restart's starting point)."""
        s = live.snapshot
        self.last_assigned.update({hid: live.stable(int(label)) for hid, label in zip(s.ids, s.labels.tolist(), strict=True)})
        self._trim()




STATE_REGISTRY_KEY = b"registry"


STATE_SNAPSHOT_KEY = b"snapshot"


def encode_state(obj: dict[str, Any]) -> bytes:
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), level=6)


def decode_state(raw: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(raw))


def snapshot_to_state(live: LiveSnapshot) -> dict[str, Any]:
    """What a follower needs to assign arrivals: ids, stable labels, core distances, cluster reach."""
    s = live.snapshot
    return {
        "version": 1,
        "run_id": s.run_id,
        "min_samples": s.min_samples,
        "attach_similarity": s.attach_similarity,
        "ids": list(s.ids),
        "labels": s.labels.tolist(),
        "probabilities": np.round(s.probabilities, 4).tolist(),
        "core": np.round(np.where(np.isfinite(s.core), s.core, 9.0), 6).tolist(),
        "reach": s.reach.tolist(),
        "tight": s.tight.tolist(),
        "stable_ids": live.stable_ids.tolist(),
    }


def snapshot_from_state(state: dict[str, Any]) -> LiveSnapshot:
    ids = state["ids"]
    snapshot = Snapshot(
        run_id=int(state["run_id"]),
        ids=tuple(ids),
        labels=np.asarray(state["labels"], np.int64),
        probabilities=np.asarray(state["probabilities"], np.float64),
        core=np.asarray(state["core"], np.float64),
        reach=np.asarray(state["reach"], np.float64),
        tight=np.asarray(state["tight"], np.float64),
        persistence=np.zeros(len(state["reach"])),
        min_samples=int(state["min_samples"]),
        position={hid: i for i, hid in enumerate(ids)},
        attach_similarity=float(state.get("attach_similarity", 0.0)),
    )
    return LiveSnapshot(snapshot, np.asarray(state["stable_ids"], np.int64))


