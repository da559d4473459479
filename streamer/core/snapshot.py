"""The clustering snapshot and the assignment of new arrivals to it.

A :class:`Snapshot` freezes one clustering run: ids, labels, probabilities, each
point's core distance, and for each cluster how far its members reach in
mutual-reachability terms. New headlines are assigned against it the way
hdbscan's ``approximate_predict`` does for feature-space models (which it
refuses for ``metric="precomputed"``):

1. core distance of the arrival = distance to its ``min_samples``-th neighbour;
2. mutual reachability to each known neighbour j = max(core_x, core_j, d(x, j));
3. the arrival takes the cluster of the neighbour with the smallest mutual
   reachability m (a noise neighbour makes it noise);
4. it is noise when m exceeds the cluster's *reach* (the largest distance at
   which a member joined the cluster), else its probability is
   ``tight / m`` capped at 1, where *tight* is the smallest such distance
   (hdbscan's lambda / max-lambda, written in distances);
5. like the re-clusterer's attach rule (:func:`streamer.core.clustering.attach_noise`), a
   would-be noise arrival whose most similar clustered neighbour has cosine
   similarity >= ``attach_similarity`` joins that cluster with probability 0.

Pure numpy; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from streamer.core.clustering import Clustering, members_by_cluster
from streamer.core.graph import core_distances
from streamer.domain.headline import NOISE

__all__ = ["Snapshot", "Assignment", "build_snapshot", "assign_arrivals", "exit_distances"]


@dataclass(frozen=True)
class Assignment:
    """Assignment of arrivals: ``labels`` (m,) int64 snapshot-local cluster index or NOISE; ``probabilities`` (m,)."""

    labels: np.ndarray
    probabilities: np.ndarray


@dataclass(frozen=True)
class Snapshot:
    """One clustering run, frozen. Cluster indices are local to the run (0..n_clusters-1)."""

    run_id: int
    ids: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray
    core: np.ndarray
    reach: np.ndarray
    tight: np.ndarray
    persistence: np.ndarray
    min_samples: int
    position: dict[str, int]
    attach_similarity: float = 0.0

    @property
    def n_clusters(self) -> int:
        return len(self.reach)

    def label_of(self, headline_id: str) -> int:
        """The run's local label of a window headline; noise for one the run did not see."""
        pos = self.position.get(headline_id)
        return NOISE if pos is None else int(self.labels[pos])

    def members(self) -> list[np.ndarray]:
        """Point positions of each cluster, by cluster index."""
        return members_by_cluster(self.labels, self.n_clusters)


def exit_distances(graph: sp.csr_matrix, labels: np.ndarray, core: np.ndarray) -> np.ndarray:
    """Per point: smallest mutual-reachability distance to another member of its cluster (inf for noise/isolated).

    This is the distance at which the point joins its cluster in the single-linkage
    sense, measured on the kNN graph.
    """
    coo = graph.tocoo()
    same = (labels[coo.row] == labels[coo.col]) & (labels[coo.row] != NOISE)
    rows, cols = coo.row[same], coo.col[same]
    mreach = np.maximum(np.maximum(core[rows], core[cols]), coo.data[same])
    out = np.full(len(labels), np.inf)
    np.minimum.at(out, rows, mreach)
    return out


def build_snapshot(
    run_id: int,
    ids: list[str],
    graph: sp.csr_matrix,
    clustering: Clustering,
    min_samples: int,
    attach_similarity: float = 0.0,
) -> Snapshot:
    """Freeze a clustering of ``ids`` (positions match graph rows) into a :class:`Snapshot`."""
    n = len(ids)
    if graph.shape != (n, n) or len(clustering.labels) != n:
        raise ValueError(f"{n} ids, graph {graph.shape} and {len(clustering.labels)} labels must agree")
    core = core_distances(graph, min_samples)
    exits = exit_distances(graph, clustering.labels, core)
    k = clustering.n_clusters
    reach = np.zeros(k)
    tight = np.full(k, np.inf)
    member = clustering.labels >= 0
    finite = member & np.isfinite(exits)
    np.maximum.at(reach, clustering.labels[finite], exits[finite])
    np.minimum.at(tight, clustering.labels[finite], exits[finite])
    tight = np.where(np.isfinite(tight), tight, reach)
    persistence = clustering.persistence if len(clustering.persistence) == k else np.zeros(k)
    return Snapshot(
        run_id=run_id,
        ids=tuple(ids),
        labels=clustering.labels.copy(),
        probabilities=clustering.probabilities.copy(),
        core=core,
        reach=reach,
        tight=tight,
        persistence=persistence,
        min_samples=min_samples,
        position={hid: i for i, hid in enumerate(ids)},
        attach_similarity=attach_similarity,
    )


def assign_arrivals(
    snapshot: Snapshot, neighbour_ids: list[list[str]], similarities: np.ndarray, own_ids: list[str]
) -> Assignment:
    """Assign each arrival from its nearest neighbours (ids and cosine similarities, best first).

    ``neighbour_ids[i]`` may include the arrival itself (it was upserted before the
    search) and headlines newer than the snapshot: the first is skipped, the second
    count for the arrival's core distance but cannot lend it a cluster.
    """
    m = len(own_ids)
    labels = np.full(m, NOISE, dtype=np.int64)
    probs = np.zeros(m)
    for i in range(m):
        dists: list[float] = []
        known: list[tuple[float, int]] = []
        for hid, sim in zip(neighbour_ids[i], similarities[i], strict=False):
            if hid == own_ids[i] or not np.isfinite(sim):
                continue
            d = max(1.0 - float(sim), 0.0)
            dists.append(d)
            pos = snapshot.position.get(hid)
            if pos is not None:
                known.append((d, pos))
        if not known:
            continue
        if len(dists) >= snapshot.min_samples:
            core_x = sorted(dists)[snapshot.min_samples - 1]
            # Ties (common: the arrival's own core distance dominates) go to the nearest headline,
            # as in hdbscan's approximate_predict, not to whichever the snapshot lists first.
            best_m, _, best_pos = min((max(core_x, snapshot.core[pos], d), d, pos) for d, pos in known)
            cluster = int(snapshot.labels[best_pos])
            if cluster != NOISE and best_m <= snapshot.reach[cluster]:
                labels[i] = cluster
                probs[i] = 1.0 if best_m <= 0 else min(1.0, snapshot.tight[cluster] / best_m)
                continue
        if snapshot.attach_similarity > 0:
            clustered = [(d, pos) for d, pos in known if snapshot.labels[pos] != NOISE]
            if clustered:
                d, pos = min(clustered)
                if 1.0 - d >= snapshot.attach_similarity:
                    labels[i] = int(snapshot.labels[pos])
    return Assignment(labels, probs)
