"""Arrival assignment against a snapshot (approximate predict on a precomputed graph)."""

from __future__ import annotations

import numpy as np

from streamer.core.clustering import HdbscanParams, run_hdbscan
from streamer.core.graph import build_distance_graph, knn_exact
from streamer.core.snapshot import assign_arrivals, build_snapshot
from streamer.domain.headline import NOISE
from tests.unit.helpers import blobs, unit_rows


def _snapshot(x: np.ndarray, k: int = 10, min_samples: int = 2):
    graph = build_distance_graph(knn_exact(x, k))
    clustering = run_hdbscan(graph, HdbscanParams(min_cluster_size=5, min_samples=min_samples, selection_method="eom", selection_epsilon=0.0, attach_similarity=0.0))
    return build_snapshot(1, [f"p{i}" for i in range(len(x))], graph, clustering, min_samples), clustering


def _search(queries: np.ndarray, x: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
    sims = queries @ x.T
    order = np.argsort(-sims, axis=1)[:, :limit]
    return [[f"p{j}" for j in row] for row in order], np.take_along_axis(sims, order, 1)


def test_arrivals_near_a_cluster_join_it() -> None:
    """Held-out samples of each blob are assigned to that blob's cluster."""
    everything, truth_all = blobs(4, 45, seed=1)
    held_out = np.tile(np.arange(45) >= 40, 4)
    x, truth = everything[~held_out], truth_all[~held_out]
    fresh, fresh_truth = everything[held_out], truth_all[held_out]
    snap, clustering = _snapshot(x)
    ids, sims = _search(fresh, x, 21)
    result = assign_arrivals(snap, ids, sims, [f"new{i}" for i in range(len(fresh))])
    blob_label = {c: np.bincount(clustering.labels[truth == c][clustering.labels[truth == c] >= 0]).argmax() for c in range(4)}
    assigned = result.labels != NOISE
    assert assigned.mean() >= 0.8
    assert all(result.labels[i] == blob_label[fresh_truth[i]] for i in np.flatnonzero(assigned))
    assert ((result.probabilities > 0) & (result.probabilities <= 1))[assigned].all()


def test_far_outlier_is_noise() -> None:
    """A point far from every cluster is noise (outside every cluster's reach)."""
    x, _ = blobs(3, 30)
    snap, _ = _snapshot(x)
    outlier = unit_rows(np.random.default_rng(5).normal(size=(1, x.shape[1])))
    ids, sims = _search(outlier, x, 21)
    assert assign_arrivals(snap, ids, sims, ["out"]).labels.tolist() == [NOISE]


def test_no_known_neighbours_is_noise() -> None:
    """Neighbours all newer than the snapshot cannot lend a cluster."""
    x, _ = blobs(2, 20)
    snap, _ = _snapshot(x)
    result = assign_arrivals(snap, [["n1", "n2", "n3"]], np.array([[0.99, 0.98, 0.97]]), ["x"])
    assert result.labels.tolist() == [NOISE]


def test_own_id_in_results_is_ignored() -> None:
    """The arrival was upserted before its search: its own hit (similarity 1) must not count."""
    x, _ = blobs(2, 20)
    snap, _ = _snapshot(x)
    ids, sims = _search(x[:1], x, 21)
    with_self = assign_arrivals(snap, ids, sims, ["p0"])
    ids2 = [[i for i in ids[0] if i != "p0"]]
    sims2 = sims[:, 1:]
    assert with_self.labels.tolist() == assign_arrivals(snap, ids2, sims2, ["p0"]).labels.tolist()


def test_arrival_matching_a_member_gets_its_label() -> None:
    """Re-assigning a member from its own neighbours reproduces its snapshot label (most members)."""
    x, _ = blobs(3, 30, seed=4)
    snap, clustering = _snapshot(x)
    ids, sims = _search(x, x, 22)
    result = assign_arrivals(snap, ids, sims, [f"p{i}" for i in range(len(x))])
    members = clustering.labels >= 0
    assert (result.labels[members] == clustering.labels[members]).mean() >= 0.95


def test_members_lists_cluster_positions() -> None:
    """members()[c] holds exactly the positions labelled c."""
    x, _ = blobs(3, 20)
    snap, clustering = _snapshot(x)
    for c, members in enumerate(snap.members()):
        assert set(members.tolist()) == set(np.flatnonzero(clustering.labels == c).tolist())


def test_ties_in_mutual_reachability_go_to_the_nearest_neighbour() -> None:
    """An arrival in a sparse spot has the same mutual reachability (its own core distance) to
    several clustered headlines; like hdbscan's approximate_predict, the nearest one lends its
    cluster, whatever the headlines' order in the snapshot."""
    from streamer.core.snapshot import Snapshot

    snapshot = Snapshot(
        run_id=1,
        ids=("older", "newer"),
        labels=np.array([0, 1]),
        probabilities=np.ones(2),
        core=np.array([0.05, 0.05]),
        reach=np.array([0.9, 0.9]),
        tight=np.array([0.05, 0.05]),
        persistence=np.ones(2),
        min_samples=2,
        position={"older": 0, "newer": 1},
    )
    # Both within the arrival's core distance (0.3, its 2nd neighbour's distance): a tie at 0.3.
    found = [["newer", "older", "far"]]
    sims = np.array([[0.9, 0.7, 0.6]])
    out = assign_arrivals(snapshot, found, sims, ["a"])
    assert out.labels.tolist() == [1]
