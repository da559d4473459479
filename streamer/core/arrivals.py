"""Placing each arrival the moment it arrives: the snapshot first, then the arrivals since it.

The snapshot (:func:`streamer.core.snapshot.assign_arrivals`) only knows the headlines of the
last re-clustering run. Between two runs, headlines keep arriving, and on a news stream
most of them belong to stories the snapshot has never seen (UCI arrives in story bursts:
only ~11% of the arrivals between two runs belong to a story the previous run knew). Left
at that, a breaking story's headlines are all published as noise and then moved by the
next run, so downstream learns about a new topic only a run later.

:class:`ArrivalAssigner` remembers the arrivals since the snapshot (their published
cluster) and places each new one in this order:

1. **a story of its own**: when at least ``emerging_min_size - 1`` recent arrivals lie
   within ``emerging_similarity`` of it and no clustered headline of the snapshot is that
   close, it joins a topic already emerging among its neighbours or starts one with them:
   a new stable id at once, minted by the :class:`~streamer.core.tracking.ClusterRegistry` (the
   next run matches it like any other cluster: confirmed, merged or expired). A group near
   a snapshot cluster is a continuing story, and the next run keeps it there;
2. **the snapshot's rule** (approximate predict, then the attach rule);
3. **a recent arrival**: the cluster of its most similar recent arrival that has one, when
   their cosine similarity reaches ``attach_similarity`` (the re-clusterer's attach rule);
4. otherwise noise.

An arrival the registry already saw placed since the snapshot (a redelivery) keeps that cluster.

The recent arrivals that a new topic takes in are reported as ``moved``; the pipeline
re-publishes their assignment (reason ``emerging``). Every placement is also recorded in
the registry, so the next run matches its clusters against what was *published* (the
last run's members plus the arrivals placed since), not only against the last run: the
side of a cluster that downstream knows best keeps its id. On the UCI replay
(``bench/stream_quality.py``) these rules took the agreement of arrival assignments with
the next run from 34% to 79% (docs/benchmarks.md). Without a registry (an ingest-only
follower) rule 1 is off; an instance that does not lead the re-clusterer joins topics but
never starts one.

Pure Python/numpy; no I/O. Not thread-safe: call it from one task (the ingest loop).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from streamer.core.snapshot import Snapshot, assign_arrivals
from streamer.domain.headline import NOISE, Headline

__all__ = ["EmergingRule", "ClusterMinter", "Placement", "ArrivalOutcome", "ArrivalAssigner"]


@dataclass(frozen=True)
class EmergingRule:
    """When arrivals the snapshot cannot place follow each other or start a topic (see the module doc)."""

    attach_similarity: float = 0.5
    emerging_similarity: float = 0.6
    emerging_min_size: int = 3  # 0 = never start emerging topics
    max_recent: int = 200_000  # bound on remembered arrivals when runs stall

    def __post_init__(self) -> None:
        if not 0.0 <= self.attach_similarity <= 1.0 or not 0.0 <= self.emerging_similarity <= 1.0:
            raise ValueError("attach_similarity and emerging_similarity must be in [0, 1]")
        if self.emerging_min_size == 1 or self.emerging_min_size < 0:
            raise ValueError(f"emerging_min_size must be 0 (off) or >= 2, got {self.emerging_min_size}")


class ClusterMinter(Protocol):
    """Gives emerging topics their stable ids and learns every placement (the cluster registry)."""

    def mint(self, members: list[str], exemplar: Headline) -> int: ...

    def record(self, cluster_id: int, members: list[str]) -> None: ...

    def placed(self, headline_id: str) -> tuple[int, bool] | None:
        """(cluster id, emerging?) the arrival was published in since the snapshot, if that cluster lives."""
        ...


@dataclass(frozen=True)
class Placement:
    cluster_id: int  # stable id, or NOISE
    probability: float
    how: str  # "snapshot", "follow", "emerging", "noise", "redelivered"


@dataclass
class ArrivalOutcome:
    """Per arrival its placement; recent arrivals moved into a new topic; the topics started."""

    placements: list[Placement]
    moved: list[tuple[Headline, int]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)


@dataclass
class _Recent:
    headline: Headline
    cluster_id: int


class ArrivalAssigner:
    """Snapshot rule, then the arrivals since the snapshot (see the module docstring)."""

    def __init__(
        self, rule: EmergingRule, minter: ClusterMinter | None = None, may_mint: Callable[[], bool] = lambda: True
    ) -> None:
        """``may_mint`` is asked before each new topic: only the re-clusterer's leader mints ids."""
        self._rule = rule
        self._minter = minter
        self._may_mint = may_mint
        self._recent: OrderedDict[str, _Recent] = OrderedDict()
        self._emerging: set[int] = set()
        self._snapshot_run = -1

    def _forget_covered(self, snapshot: Snapshot) -> None:
        """A new snapshot knows the arrivals it clustered: they leave the recent set."""
        if snapshot.run_id == self._snapshot_run:
            return
        self._snapshot_run = snapshot.run_id
        for hid in [h for h in self._recent if h in snapshot.position]:
            del self._recent[hid]
        self._emerging.clear()  # the run confirmed, merged or expired them

    def assign(
        self,
        snapshot: Snapshot,
        stable_ids: np.ndarray,
        headlines: list[Headline],
        neighbour_ids: list[list[str]],
        similarities: np.ndarray,
    ) -> ArrivalOutcome:
        """Place a batch of arrivals (in order: a later one can follow an earlier one of the same batch)."""
        self._forget_covered(snapshot)
        by_snapshot = assign_arrivals(snapshot, neighbour_ids, similarities, [h.id for h in headlines])
        outcome = ArrivalOutcome([])
        for i, headline in enumerate(headlines):
            if headline.id in snapshot.position:  # a redelivery of a clustered headline keeps its label
                pos = snapshot.position[headline.id]
                placement = Placement(
                    _stable(stable_ids, int(snapshot.labels[pos])), float(snapshot.probabilities[pos]), "snapshot"
                )
            elif (kept := self._placed_before(headline)) is not None:
                placement = kept
                self._remember(headline, placement.cluster_id)
            else:
                local, prob = int(by_snapshot.labels[i]), float(by_snapshot.probabilities[i])
                by_snap = Placement(_stable(stable_ids, local), prob, "noise" if local == NOISE else "snapshot")
                placement = self._place(snapshot, headline, neighbour_ids[i], similarities[i], by_snap, outcome)
                self._remember(headline, placement.cluster_id)
                if self._minter is not None and placement.cluster_id != NOISE and placement.how != "emerging":
                    self._minter.record(placement.cluster_id, [headline.id])
            outcome.placements.append(placement)
        return outcome

    def _placed_before(self, headline: Headline) -> Placement | None:
        """A redelivered arrival (a restart before its commit, a repeated id) keeps the cluster it
        was published in since the snapshot: the same event, and no second id for its topic."""
        placed = self._minter.placed(headline.id) if self._minter is not None else None
        if placed is None:
            return None
        cluster_id, emerging = placed
        if emerging:
            self._emerging.add(cluster_id)  # later arrivals near it join it rather than start another
        return Placement(cluster_id, 0.0, "redelivered")

    def _place(
        self,
        snapshot: Snapshot,
        headline: Headline,
        neighbour_ids: list[str],
        similarities: np.ndarray,
        by_snapshot: Placement,
        outcome: ArrivalOutcome,
    ) -> Placement:
        rule = self._rule
        # Recent arrivals close to this one, with no clustered headline of the snapshot as close:
        # a group of them is a story of its own that the next run will separate.
        best_snapshot_sim = -np.inf
        closer: list[tuple[float, _Recent]] = []
        nearest_emerging: _Recent | None = None  # most similar recent arrival in an emerging topic
        nearest_placed: _Recent | None = None  # most similar recent arrival with any cluster
        for hid, sim in zip(neighbour_ids, similarities.tolist(), strict=False):
            if hid == headline.id or not np.isfinite(sim):
                continue
            recent = self._recent.get(hid)
            if recent is None:
                pos = snapshot.position.get(hid)
                if pos is not None and snapshot.labels[pos] != NOISE:
                    best_snapshot_sim = max(best_snapshot_sim, sim)
                continue
            if sim >= rule.emerging_similarity:
                closer.append((sim, recent))
            if recent.cluster_id != NOISE and sim >= rule.attach_similarity:
                # Neighbours come best first: the first one found is the most similar.
                nearest_placed = nearest_placed or recent
                if nearest_emerging is None and recent.cluster_id in self._emerging:
                    nearest_emerging = recent
        can_mint = self._minter is not None and rule.emerging_min_size > 0
        # A clustered headline of the snapshot as close as the group means a continuing story: the next
        # run keeps such a group in that cluster (on UCI it merged 2,754 emerging arrivals back into an
        # older cluster, which had their story 64% of the time). Only a group farther away is new.
        separate = best_snapshot_sim < rule.emerging_similarity
        if can_mint and separate and len(closer) + 1 >= rule.emerging_min_size:
            # Join a topic that is already emerging nearby rather than start a second one for the same story.
            if nearest_emerging is not None:
                return Placement(nearest_emerging.cluster_id, 0.0, "follow")
            if self._may_mint():
                return self._start_topic(headline, [r for _, r in closer], outcome)
        if by_snapshot.cluster_id != NOISE:
            return by_snapshot
        if nearest_placed is not None:
            return Placement(nearest_placed.cluster_id, 0.0, "follow")
        return Placement(NOISE, 0.0, "noise")

    def _start_topic(self, headline: Headline, group: list[_Recent], outcome: ArrivalOutcome) -> Placement:
        assert self._minter is not None
        cluster_id = self._minter.mint([*(r.headline.id for r in group), headline.id], headline)
        self._emerging.add(cluster_id)
        outcome.started.append(cluster_id)
        for recent in group:
            recent.cluster_id = cluster_id
            outcome.moved.append((recent.headline, cluster_id))
        return Placement(cluster_id, 0.0, "emerging")

    def _remember(self, headline: Headline, cluster_id: int) -> None:
        self._recent[headline.id] = _Recent(headline, cluster_id)
        self._recent.move_to_end(headline.id)
        while len(self._recent) > self._rule.max_recent:
            self._recent.popitem(last=False)


def _stable(stable_ids: np.ndarray, local: int) -> int:
    return NOISE if local == NOISE else int(stable_ids[local])
