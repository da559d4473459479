"""Stable cluster ids across re-clustering runs, and the lifecycle events between runs.

Each run's clusters are matched to the previous run's by member overlap
(:func:`streamer.core.matching.match_clusters`: Hungarian on Jaccard, continuations,
merges, splits). Then: a continued cluster keeps its id (**updated** when its size,
keywords or exemplar changed); an old cluster absorbed by a survivor is **merged** into it;
a new cluster split from a survivor gets a new id, ``created`` with ``split_from``, and a
``split`` event on the parent; other new clusters are **created**, other old ones **expired**.

Between runs the ingest loop may **mint** emerging clusters (:mod:`streamer.core.arrivals`):
they join the registry at once, with their members so far, and the next run matches
them like any other cluster. Minting happens on the event loop while :meth:`update`
runs in a worker thread, so both take a lock; a cluster minted while an update is
computing is carried into the registry that update leaves.

The registry's state (id counter, run counter, members per cluster) round-trips
through :meth:`ClusterRegistry.to_state` so a restart does not renumber topics.
Pure Python/numpy/scipy; no I/O.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamer.core.matching import match_clusters
from streamer.core.summaries import ClusterSummary
from streamer.domain.events import ClusterEvent, ClusterEventType
from streamer.domain.headline import NOISE, Headline

__all__ = ["TrackedCluster", "ClusterRegistry", "TrackingResult"]



@dataclass(frozen=True)
class TrackedCluster:
    id: int
    members: frozenset[str]
    keywords: tuple[str, ...] = ()
    exemplar_id: str | None = None
    exemplar_title: str | None = None
    persistence: float = 0.0
    born_run: int = 0
    emerging: bool = False  # minted between runs from arrivals; the next run confirms it or not

    @property
    def size(self) -> int:
        return len(self.members)


@dataclass
class TrackingResult:
    """Outcome of one run: ``stable_ids[c]`` is the id of local cluster c; the events to publish."""

    run_id: int
    stable_ids: np.ndarray
    events: list[ClusterEvent] = field(default_factory=list)


class ClusterRegistry:
    """Clusters of the latest run, by stable id, and the counters that make new ids."""

    def __init__(self, *, match_threshold: float = 0.3, split_min_share: float = 0.2) -> None:
        if not 0 < match_threshold <= 1 or not 0 < split_min_share <= 1:
            raise ValueError("match_threshold and split_min_share must be in (0, 1]")
        self.match_threshold = match_threshold
        self.split_min_share = split_min_share
        self.next_id = 0
        self.run_id = 0
        self.clusters: dict[int, TrackedCluster] = {}
        self._lock = threading.Lock()
        self._recorded: dict[str, int] = {}  # arrivals recorded since the last update

    # -- persistence -----------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {
            "version": 1,
            "next_id": self.next_id,
            "run_id": self.run_id,
            "clusters": [_cluster_to_state(c) for c in self.clusters.values()],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state.get("version") != 1:
            raise ValueError(f"unknown registry state version {state.get('version')!r}")
        self.next_id = int(state["next_id"])
        self.run_id = int(state["run_id"])
        self.clusters = {int(c["id"]): _cluster_from_state(c) for c in state["clusters"]}
        self._recorded = {}  # recorded against the clusters just replaced

    def emerging_state(self) -> dict[str, Any]:
        """The id counter and the emerging topics minted since the last run, with their members.

        Written whenever the ingest loop mints an id, before its events: a restart between a mint
        and the commit of its batch then brings the topic back (:meth:`restore_emerging`) and the
        redelivered arrivals land in it again, instead of announcing the story under a second id.
        """
        with self._lock:
            minted = [_cluster_to_state(c) for c in self.clusters.values() if c.emerging]
            return {"next_id": self.next_id, "run_id": self.run_id, "emerging": minted}

    def restore_emerging(self, state: dict[str, Any]) -> list[int]:
        """Take back the counter and the topics of :meth:`emerging_state`; returns the ids restored.

        Topics minted before the last persisted run are left out: that run matched or expired them.
        """
        with self._lock:
            self.next_id = max(self.next_id, int(state["next_id"]))
            if int(state.get("run_id", -1)) < self.run_id:
                return []
            restored: list[int] = []
            for raw in state.get("emerging", []):
                cluster = _cluster_from_state(raw)
                if cluster.id in self.clusters:
                    continue
                self.clusters[cluster.id] = cluster
                for hid in cluster.members:
                    self._recorded[hid] = cluster.id
                restored.append(cluster.id)
            return restored

    def placed(self, headline_id: str) -> tuple[int, bool] | None:
        """(cluster id, emerging?) an arrival was published in since the last run, if that cluster lives."""
        with self._lock:
            cid = self._recorded.get(headline_id)
            if cid is None or cid not in self.clusters:
                return None
            return cid, self.clusters[cid].emerging

    def cluster_of(self) -> dict[str, int]:
        """Headline id -> stable cluster id, as of the latest run."""
        return _cluster_of(self.clusters)

    # -- emerging clusters (event loop) ----------------------------------------------------
    def mint(self, members: list[str], exemplar: Headline) -> int:
        """A new id for an emerging topic of ``members``; it is matched at the next run."""
        with self._lock:
            cid = self._new_id()
            self._leave_recorded(members, cid)
            self.clusters[cid] = TrackedCluster(
                id=cid,
                members=frozenset(members),
                exemplar_id=exemplar.id,
                exemplar_title=exemplar.title,
                born_run=self.run_id + 1,
                emerging=True,
            )
            return cid

    def record(self, cluster_id: int, members: list[str]) -> None:
        """Arrivals were published as members of ``cluster_id``: the next run matches against
        published membership, so the side of a cluster that downstream knows best keeps its id."""
        with self._lock:
            if cluster_id not in self.clusters:
                return
            self._leave_recorded(members, cluster_id)
            cluster = self.clusters[cluster_id]
            self.clusters[cluster_id] = replace(cluster, members=cluster.members | frozenset(members))

    def _leave_recorded(self, members: list[str], cluster_id: int) -> None:
        """Arrivals recorded in one cluster and now published in another leave the first (lock held)."""
        for hid in members:
            earlier = self._recorded.get(hid)
            if earlier is not None and earlier != cluster_id and earlier in self.clusters:
                old = self.clusters[earlier]
                self.clusters[earlier] = replace(old, members=old.members - {hid})
            self._recorded[hid] = cluster_id

    def minted_event(self, cluster_id: int) -> ClusterEvent:
        """The ``created`` event of a cluster just minted (no keywords until a run summarises it)."""
        with self._lock:
            cluster = self.clusters[cluster_id]
        # The run id at mint time (born_run - 1), so that the event is the same one when a restart re-sends it.
        return ClusterEvent.make(
            type=ClusterEventType.CREATED,
            cluster_id=cluster_id,
            run_id=cluster.born_run - 1,
            emerging=True,
            **_event_fields(cluster),
        )

    # -- matching --------------------------------------------------------------------------
    def _new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def update(self, ids: list[str], labels: np.ndarray, summaries: list[ClusterSummary]) -> TrackingResult:
        """Match a new clustering of ``ids`` to the previous run; returns stable ids and events.

        The previous run's clusters and the emerging ones minted since are matched alike.
        Emerging clusters minted while this computes stay in the registry for the next run.
        """
        if len(ids) != len(labels):
            raise ValueError(f"{len(ids)} ids but {len(labels)} labels")
        with self._lock:
            self.run_id += 1
            run = self.run_id
            clusters = dict(self.clusters)
            self._recorded = {}
        n_new = len(summaries)
        new_members: list[set[str]] = [set() for _ in range(n_new)]
        for hid, label in zip(ids, labels.tolist(), strict=True):
            if label != NOISE:
                new_members[label].add(hid)
        old_ids = list(clusters)
        old_index = {cid: i for i, cid in enumerate(old_ids)}
        previous = _cluster_of(clusters)

        overlap: Counter[tuple[int, int]] = Counter()
        for c, members in enumerate(new_members):
            for hid in members:
                old = previous.get(hid)
                if old is not None:
                    overlap[(old_index[old], c)] += 1
        old_sizes = [clusters[cid].size for cid in old_ids]
        new_sizes = [len(m) for m in new_members]

        m = match_clusters(
            overlap, old_sizes, new_sizes, match_threshold=self.match_threshold, split_min_share=self.split_min_share
        )
        match_new_to_old, split_parent = m.continues, m.split_from
        matched_old, absorbed = m.matched_old(), m.absorbed()
        merged_into = {c: [old_ids[o] for o in olds] for c, olds in m.merged_into.items()}
        stable = np.zeros(n_new, dtype=np.int64)
        events: list[ClusterEvent] = []
        for c, o in match_new_to_old.items():
            stable[c] = old_ids[o]
        split_children: dict[int, list[int]] = defaultdict(list)
        with self._lock:
            fresh_ids = [self._new_id() for c in range(n_new) if c not in match_new_to_old]
        fresh = iter(fresh_ids)
        for c in range(n_new):
            if c not in match_new_to_old:
                stable[c] = next(fresh)
            if c in split_parent:
                split_children[old_ids[split_parent[c]]].append(int(stable[c]))

        new_registry: dict[int, TrackedCluster] = {}
        for c, summary in enumerate(summaries):
            cid = int(stable[c])
            old = clusters.get(cid) if c in match_new_to_old else None
            tracked = TrackedCluster(
                id=cid,
                members=frozenset(new_members[c]),
                keywords=tuple(summary.keywords),
                exemplar_id=summary.exemplar_id,
                exemplar_title=summary.exemplar_title,
                persistence=summary.persistence,
                born_run=old.born_run if old else run,
            )
            new_registry[cid] = tracked
            fields = _event_fields(tracked)
            if old is None:
                parent = split_parent.get(c)
                events.append(
                    ClusterEvent.make(
                        type=ClusterEventType.CREATED,
                        cluster_id=cid,
                        run_id=run,
                        split_from=old_ids[parent] if parent is not None else None,
                        **fields,
                    )
                )
            elif (old.size, old.keywords, old.exemplar_id) != (tracked.size, tracked.keywords, tracked.exemplar_id):
                events.append(ClusterEvent.make(type=ClusterEventType.UPDATED, cluster_id=cid, run_id=run, **fields))
            if c in merged_into:
                events.append(
                    ClusterEvent.make(
                        type=ClusterEventType.MERGED,
                        cluster_id=cid,
                        run_id=run,
                        merged_from=sorted(merged_into[c]),
                        **fields,
                    )
                )
        for parent_id, children in sorted(split_children.items()):
            events.append(
                ClusterEvent.make(
                    type=ClusterEventType.SPLIT,
                    cluster_id=parent_id,
                    run_id=run,
                    split_into=sorted(children),
                    **_event_fields(new_registry[parent_id]),
                )
            )
        for o, cid in enumerate(old_ids):
            if o in matched_old or o in absorbed:
                continue
            gone = clusters[cid]
            events.append(
                ClusterEvent.make(
                    type=ClusterEventType.EXPIRED,
                    cluster_id=cid,
                    run_id=run,
                    size=0,
                    keywords=list(gone.keywords),
                    exemplar_id=gone.exemplar_id,
                    exemplar_title=gone.exemplar_title,
                )
            )
        with self._lock:
            # Emerging clusters minted on the event loop while this computed wait for the next run.
            for cid, cluster in self.clusters.items():
                if cid not in clusters and cid not in new_registry:
                    new_registry[cid] = cluster
            self.clusters = new_registry
        return TrackingResult(run, stable, events)


def _cluster_of(clusters: dict[int, TrackedCluster]) -> dict[str, int]:
    return {hid: c.id for c in clusters.values() for hid in c.members}




def _event_fields(cluster: TrackedCluster) -> dict[str, Any]:
    return {
        "size": cluster.size,
        "keywords": list(cluster.keywords),
        "exemplar_id": cluster.exemplar_id,
        "exemplar_title": cluster.exemplar_title,
        "persistence": cluster.persistence,
    }


def _cluster_to_state(c: TrackedCluster) -> dict[str, Any]:
    return {
        "id": c.id,
        "members": sorted(c.members),
        "keywords": list(c.keywords),
        "exemplar_id": c.exemplar_id,
        "exemplar_title": c.exemplar_title,
        "persistence": c.persistence,
        "born_run": c.born_run,
        "emerging": c.emerging,
    }


def _cluster_from_state(c: dict[str, Any]) -> TrackedCluster:
    return TrackedCluster(
        id=int(c["id"]),
        members=frozenset(c["members"]),
        keywords=tuple(c["keywords"]),
        exemplar_id=c["exemplar_id"],
        exemplar_title=c["exemplar_title"],
        persistence=float(c["persistence"]),
        born_run=int(c["born_run"]),
        emerging=bool(c.get("emerging", False)),
    )
