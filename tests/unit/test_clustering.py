"""HDBSCAN on the sparse graph: edge cases and the dense-equivalence check."""

from __future__ import annotations

import hdbscan
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.clustering import HdbscanParams, mutual_reachability, run_hdbscan
from streamer.core.graph import build_distance_graph, knn_exact
from streamer.domain.headline import NOISE
from tests.unit.helpers import blobs, unit_rows


def _graph(x: np.ndarray, k: int) -> sp.csr_matrix:
    return build_distance_graph(knn_exact(x, k))


def test_empty_graph_gives_empty_result() -> None:
    """0 points -> 0 labels, 0 clusters."""
    result = run_hdbscan(sp.csr_matrix((0, 0)), HdbscanParams(min_cluster_size=5, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))
    assert result.labels.shape == (0,) and result.n_clusters == 0


def test_one_headline_is_noise() -> None:
    """A single point cannot form a cluster."""
    result = run_hdbscan(sp.csr_matrix((1, 1)), HdbscanParams(min_cluster_size=5, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))
    assert result.labels.tolist() == [NOISE]


def test_fewer_points_than_min_cluster_size_is_all_noise() -> None:
    """n < min_cluster_size -> every point noise, no library call."""
    x, _ = blobs(1, 4)
    result = run_hdbscan(_graph(x, 3), HdbscanParams(min_cluster_size=5, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))
    assert (result.labels == NOISE).all()


def test_blobs_are_recovered() -> None:
    """Four separated blobs -> four clusters matching the truth."""
    x, truth = blobs(4, 40)
    result = run_hdbscan(_graph(x, 10), HdbscanParams(min_cluster_size=5, min_samples=2, selection_method="eom", selection_epsilon=0.0, attach_similarity=0.0))
    assert result.n_clusters == 4
    for c in range(4):
        assert len(set(result.labels[truth == c].tolist()) - {NOISE}) == 1
    assert len(result.persistence) == 4


def test_duplicates_cluster_together() -> None:
    """Exact duplicate headlines (distance 0 -> MIN_DISTANCE) end in the same cluster."""
    x, _ = blobs(3, 20)
    x = np.vstack([x, x[:5]])
    result = run_hdbscan(_graph(x, 8), HdbscanParams(min_cluster_size=4, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))
    assert (result.labels[:5] == result.labels[-5:]).all()


def test_disconnected_groups_do_not_raise() -> None:
    """hdbscan raises on a disconnected sparse graph; the bridged graph clusters fine."""
    a = unit_rows(np.array([[1, 0.02 * i, 0, 0] for i in range(8)], float))
    b = unit_rows(np.array([[0, 0, 1, 0.02 * i] for i in range(8)], float))
    result = run_hdbscan(_graph(np.vstack([a, b]), 3), HdbscanParams(min_cluster_size=4, selection_method="eom", min_samples=2, selection_epsilon=0.0, attach_similarity=0.0))
    assert result.n_clusters == 2


def test_rows_with_fewer_than_min_samples_neighbours_are_refused() -> None:
    """A graph built with k < min_samples is a parameter error, reported, not clamped."""
    x, _ = blobs(2, 20)
    graph = build_distance_graph(knn_exact(x, 1), bridge=True)
    short = graph.copy().tolil()
    short[0, :] = 0
    short[:, 0] = 0
    short[0, 1] = short[1, 0] = 0.5
    with pytest.raises(ValueError, match="fewer than min_samples"):
        run_hdbscan(short.tocsr(), HdbscanParams(min_samples=5, min_cluster_size=5, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))


def test_asymmetric_graph_is_refused() -> None:
    """An asymmetric matrix (the tutorial's mistake) is rejected before hdbscan sees it."""
    graph = sp.csr_matrix(np.triu(np.full((6, 6), 0.5), 1))
    with pytest.raises(ValueError, match="symmetric"):
        run_hdbscan(graph, HdbscanParams(min_cluster_size=2, min_samples=1, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))


def test_bad_parameters_are_rejected() -> None:
    """Parameters are checked up front, never clamped."""
    with pytest.raises(ValueError, match="min_cluster_size"):
        HdbscanParams(min_cluster_size=1, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0)
    with pytest.raises(ValueError, match="selection_method"):
        HdbscanParams(selection_method="best", min_cluster_size=5, min_samples=2, selection_epsilon=0.0, attach_similarity=0.0)


def test_sparse_equals_dense_when_k_covers_all_points() -> None:
    """With k = n - 1 the sparse graph holds every distance: labels equal the dense-matrix method."""
    x, _ = blobs(4, 25, spread=0.25, seed=3)
    n = len(x)
    params = HdbscanParams(min_cluster_size=5, min_samples=3, selection_method="eom", selection_epsilon=0.0, attach_similarity=0.0)
    sparse_labels = run_hdbscan(_graph(x, n - 1), params).labels
    dense = np.clip(1.0 - x.astype(np.float64) @ x.T.astype(np.float64), 1e-6, 2.0)
    np.fill_diagonal(dense, 0.0)
    dense_labels = hdbscan.HDBSCAN(
        metric="precomputed", min_cluster_size=5, min_samples=3, cluster_selection_method="eom"
    ).fit_predict(dense)
    assert np.array_equal(sparse_labels, dense_labels)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), mcs=st.integers(2, 8), ms=st.integers(1, 4))
def test_labels_property(seed: int, mcs: int, ms: int) -> None:
    """n labels; every cluster has at least min_cluster_size members; labels are 0..c-1 or NOISE."""
    x, _ = blobs(3, 15, seed=seed)
    result = run_hdbscan(_graph(x, 6), HdbscanParams(min_cluster_size=mcs, min_samples=ms, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0))
    assert len(result.labels) == len(x)
    counts = np.bincount(result.labels[result.labels >= 0], minlength=result.n_clusters)
    assert (counts >= mcs).all()
    assert set(result.labels.tolist()) <= set(range(result.n_clusters)) | {NOISE}


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_shuffled_input_gives_same_partition(seed: int) -> None:
    """Permuting tie-free input permutes the labels but keeps the partition.

    min_samples=1 keeps mutual reachability equal to the distance: larger values make many
    edges tie at a shared core distance, and tied MST edges may legitimately break either way.
    """
    x, _ = blobs(3, 20, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(x))
    params = HdbscanParams(min_cluster_size=5, min_samples=1, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0)
    a = run_hdbscan(_graph(x, 8), params).labels
    b = run_hdbscan(_graph(x[perm], 8), params).labels
    pairs = set(zip(a[perm].tolist(), b.tolist(), strict=True))
    assert len({p for p, _ in pairs}) == len(pairs) == len({q for _, q in pairs})


def test_attach_joins_noise_to_a_close_clustered_neighbour() -> None:
    """A noise point whose nearest clustered neighbour is within 1 - min_similarity takes its cluster."""
    graph = sp.csr_matrix(np.array([[0, 0.1, 0.9], [0.1, 0, 0.3], [0.9, 0.3, 0]]))
    labels = np.array([0, NOISE, NOISE])
    from streamer.core.clustering import attach_noise

    assert attach_noise(graph, labels, 0.8).tolist() == [0, 0, NOISE]  # point 2's only clustered neighbour is 0 at 0.9


def test_attach_does_not_chain() -> None:
    """Attached points do not attach others: one pass over HDBSCAN's own labels."""
    from streamer.core.clustering import attach_noise

    graph = sp.csr_matrix(np.array([[0, 0.1, 0], [0.1, 0, 0.1], [0, 0.1, 0]]))
    assert attach_noise(graph, np.array([0, NOISE, NOISE]), 0.5).tolist() == [0, 0, NOISE]


def test_attach_ignores_bridges() -> None:
    """Bridge edges (distance 4) never attach a point to another component's cluster."""
    a = unit_rows(np.array([[1, 0.02 * i, 0, 0] for i in range(8)], float))
    outlier = unit_rows(np.array([[0, 0, 1, 0]], float))
    result = run_hdbscan(_graph(np.vstack([a, outlier]), 3), HdbscanParams(min_cluster_size=4, attach_similarity=0.01, min_samples=2, selection_method="leaf", selection_epsilon=0.0))
    assert result.labels[-1] == NOISE


def test_attach_similarity_out_of_range_is_rejected() -> None:
    """attach_similarity outside [0, 1] is a parameter error."""
    with pytest.raises(ValueError, match="attach_similarity"):
        HdbscanParams(attach_similarity=1.5, min_cluster_size=5, min_samples=2, selection_method="leaf", selection_epsilon=0.0)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    mcs=st.integers(3, 12),
    ms=st.integers(1, 5),
    method=st.sampled_from(["eom", "leaf"]),
    epsilon=st.sampled_from([0.0, 0.1, 0.3]),
)
def test_csr_path_equals_hdbscans_own_sparse_path(seed: int, mcs: int, ms: int, method: str, epsilon: float) -> None:
    """run_hdbscan's CSR mutual-reachability + MST path gives hdbscan's labels, probabilities and
    persistence on the same sparse graph, ties included (tied MST edges are ordered as hdbscan does)."""
    x, _ = blobs(5, 40, spread=0.3, seed=seed)
    graph = _graph(x, 10)
    ours = run_hdbscan(graph, HdbscanParams(min_cluster_size=mcs, min_samples=ms, selection_method=method, selection_epsilon=epsilon, attach_similarity=0.0))
    theirs = hdbscan.HDBSCAN(
        metric="precomputed",
        min_cluster_size=mcs,
        min_samples=ms,
        cluster_selection_method=method,
        cluster_selection_epsilon=epsilon,
    ).fit(graph)
    assert np.array_equal(ours.labels, theirs.labels_)
    assert np.allclose(ours.probabilities, np.nan_to_num(theirs.probabilities_))
    assert np.allclose(ours.persistence, theirs.cluster_persistence_)


def test_mutual_reachability_takes_the_larger_of_both_core_distances() -> None:
    # Path graph a-b-c with a far leaf d on c: core distance (min_samples=1) is each row's smallest edge.
    dense = np.array([[0, 0.1, 0, 0], [0.1, 0, 0.2, 0], [0, 0.2, 0, 0.9], [0, 0, 0.9, 0]])
    reach = mutual_reachability(sp.csr_matrix(dense), min_samples=1).toarray()
    # cores: a 0.1, b 0.1, c 0.2, d 0.9
    assert reach[0, 1] == pytest.approx(0.1)
    assert reach[1, 2] == pytest.approx(0.2)
    assert reach[2, 3] == pytest.approx(0.9)
    reach2 = mutual_reachability(sp.csr_matrix(dense), min_samples=2).toarray()
    # cores at min_samples=2: a has one neighbour only -> its row is short; b 0.2, c 0.9
    assert reach2[1, 2] == pytest.approx(0.9)
    assert np.isinf(reach2[0, 1])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), n_clusters=st.integers(0, 9))
def test_cluster_summaries_equal_the_per_cluster_scan(seed: int, n: int, n_clusters: int) -> None:
    """Keywords and exemplars (grouped by one stable sort since the 1M-window work) equal the
    original definition: members = np.flatnonzero(labels == c), scanned once per cluster."""
    from sklearn.feature_extraction.text import CountVectorizer

    from streamer.core.labels import _keyword_text, ctfidf_keywords, exemplars

    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, max(n_clusters, 1), n) if n_clusters else np.full(n, NOISE)
    words = ["fed", "rates", "apple", "iphone", "storm", "vote", "court", "the", "market", "match"]
    titles = [" ".join(rng.choice(words, rng.integers(1, 5))) + " - Outlet" for _ in range(n)]
    vectors = unit_rows(rng.normal(size=(n, 6)))

    expected_exemplars = np.full(n_clusters, -1, dtype=np.int64)
    docs = []
    for c in range(n_clusters):
        members = np.flatnonzero(labels == c)
        docs.append(" ".join(_keyword_text(titles[i]) for i in members))
        if members.size:
            centroid = vectors[members].mean(axis=0)
            expected_exemplars[c] = members[int(np.argmax(vectors[members] @ centroid))]
    assert np.array_equal(exemplars(vectors, labels, n_clusters), expected_exemplars)

    keywords = ctfidf_keywords(titles, labels, n_clusters, top_n=3)
    assert len(keywords) == n_clusters
    if n_clusters:
        vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b", lowercase=True)
        try:
            counts = sp.csr_matrix(vectorizer.fit_transform(docs), dtype=np.float64)
        except ValueError:  # only stop words / no members anywhere
            assert keywords == [[] for _ in range(n_clusters)]
            return
        words_per = np.asarray(counts.sum(axis=1)).ravel()
        idf = np.log1p(words_per.mean() / np.maximum(np.asarray(counts.sum(axis=0)).ravel(), 1.0))
        scores = (sp.diags(1.0 / np.maximum(words_per, 1.0)) @ counts @ sp.diags(idf)).tocsr()
        vocab = vectorizer.get_feature_names_out()
        for c in range(n_clusters):
            row = scores.getrow(c)
            assert keywords[c] == [str(t) for _, t in sorted(zip(-row.data, vocab[row.indices], strict=True))[:3]]
