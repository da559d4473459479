"""kNN tables and the distance graph contract (symmetric, connected, no self-loops, no zero distances)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import csgraph

from streamer.core.graph import (
    BRIDGE_DISTANCE,
    MIN_DISTANCE,
    NeighbourTable,
    build_distance_graph,
    core_distances,
    knn_exact,
    knn_hnsw,
    knn_ivf,
    neighbours_from_search,
)
from tests.unit.helpers import blobs, unit_rows


def test_knn_exact_matches_brute_force() -> None:
    """Exact search returns the same neighbours as a dense argsort, self excluded."""
    x, _ = blobs(3, 30)
    table = knn_exact(x, 7, block_size=16)
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    expected = np.argsort(-sims, axis=1)[:, :7]
    assert np.array_equal(np.sort(table.indices, 1), np.sort(expected, 1))
    assert not (table.indices == np.arange(len(x))[:, None]).any()


def test_knn_exact_empty_input() -> None:
    """No vectors -> an empty (0, k) table."""
    table = knn_exact(np.zeros((0, 8), np.float32), 5)
    assert table.indices.shape == (0, 5)


def test_knn_exact_fewer_points_than_k() -> None:
    """With n - 1 < k the missing slots are -1 / -inf."""
    x = unit_rows(np.eye(3, 8))
    table = knn_exact(x, 5)
    assert (table.indices[:, 2:] == -1).all()
    assert np.isneginf(table.similarities[:, 2:]).all()


def test_duplicates_never_list_themselves() -> None:
    """Exact duplicates tie with self; self is still dropped and the twin kept."""
    x = unit_rows(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float))
    table = knn_exact(x, 2)
    assert table.indices[0, 0] == 1 and table.indices[1, 0] == 0


def test_duplicates_get_min_distance_not_zero() -> None:
    """Distance 0 would be dropped by scipy; duplicates are stored at MIN_DISTANCE."""
    x = unit_rows(np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float))
    graph = build_distance_graph(knn_exact(x, 2))
    assert graph[0, 1] == pytest.approx(MIN_DISTANCE)
    assert graph.data.min() >= MIN_DISTANCE


def test_disconnected_components_are_bridged() -> None:
    """Two far groups with k smaller than the group size -> one component via a bridge edge."""
    a = unit_rows(np.array([[1, 0.01 * i, 0, 0] for i in range(5)], float))
    b = unit_rows(np.array([[0, 0, 1, 0.01 * i] for i in range(5)], float))
    table = knn_exact(np.vstack([a, b]), 2)
    graph = build_distance_graph(table)
    assert csgraph.connected_components(graph, directed=False)[0] == 1
    assert (graph.data == BRIDGE_DISTANCE).sum() == 2  # one bridge, both directions


def test_hnsw_small_input_falls_back_to_exact() -> None:
    """Tiny windows are searched exactly even when HNSW is asked for."""
    x, _ = blobs(2, 10)
    assert np.array_equal(knn_hnsw(x, 5).indices, knn_exact(x, 5).indices)


def test_hnsw_recall_on_blobs() -> None:
    """HNSW finds at least 95% of the exact neighbours."""
    x, _ = blobs(5, 200, dim=32)
    exact, approx = knn_exact(x, 10), knn_hnsw(x, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices, exact.indices, strict=True)])
    assert recall >= 0.95


def test_neighbours_from_search_drops_self_and_outsiders() -> None:
    """Milvus hits outside the clustered set and the row itself are skipped."""
    table = neighbours_from_search(
        ["a", "b", "c"],
        [["a", "zz", "b", "c"], ["b", "a"], ["c", "b", "a"]],
        np.array([[1, 0.9, 0.8, 0.7], [1, 0.8, -np.inf, -np.inf], [1, 0.7, 0.6, -np.inf]], np.float32),
        2,
    )
    assert table.indices.tolist() == [[1, 2], [0, -1], [1, 0]]


def test_table_shape_mismatch_is_rejected() -> None:
    """Indices and similarities must have the same shape."""
    with pytest.raises(ValueError, match="equal 2-d shapes"):
        NeighbourTable(np.zeros((2, 3), np.int64), np.zeros((2, 2), np.float32))


def test_core_distance_is_min_samples_th_neighbour() -> None:
    """Same definition as hdbscan's sparse path: the min_samples-th smallest stored distance."""
    graph = sp.csr_matrix(np.array([[0, 0.1, 0.3, 0.2], [0.1, 0, 0.5, 0], [0.3, 0.5, 0, 0], [0.2, 0, 0, 0]]))
    core = core_distances(graph, 2)
    assert core[0] == pytest.approx(0.2)
    assert core[1] == pytest.approx(0.5)
    assert np.isinf(core[3])  # a single stored neighbour


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 60),
    k=st.integers(1, 12),
    dim=st.integers(2, 16),
    seed=st.integers(0, 10_000),
)
def test_graph_contract_property(n: int, k: int, dim: int, seed: int) -> None:
    """For any input: symmetric, no self-loops, connected, distances in [MIN_DISTANCE, BRIDGE_DISTANCE]."""
    x = unit_rows(np.random.default_rng(seed).normal(size=(n, dim)))
    graph = build_distance_graph(knn_exact(x, k))
    assert (abs(graph - graph.T) > 1e-12).nnz == 0
    assert graph.diagonal().sum() == 0
    assert csgraph.connected_components(graph, directed=False)[0] == 1
    assert graph.data.min() >= MIN_DISTANCE and graph.data.max() <= BRIDGE_DISTANCE
    assert graph.nnz <= 2 * n * k + 2 * (n - 1)


def test_ivf_recall_on_blobs() -> None:
    """IVF (used for large windows) finds at least 95% of the exact neighbours, and is not exact."""
    x, _ = blobs(40, 300, dim=32, spread=0.5)
    exact, approx = knn_exact(x, 10), knn_ivf(x, 10, nprobe=8)
    assert not np.array_equal(exact.indices, approx.indices)  # the index really ran
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.indices, exact.indices, strict=True)])
    assert recall >= 0.95
    assert not (approx.indices == np.arange(len(x))[:, None]).any()
