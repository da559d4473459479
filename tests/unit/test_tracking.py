"""Stable ids and lifecycle events: created, updated, merged, split, expired, restart."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.summaries import ClusterSummary
from streamer.core.tracking import ClusterRegistry
from streamer.domain.events import ClusterEventType as T

IDS = [f"h{i}" for i in range(60)]


def _summaries(labels: np.ndarray) -> list[ClusterSummary]:
    n = int(labels.max()) + 1 if (labels >= 0).any() else 0
    return [
        ClusterSummary(cluster_id=c, size=int((labels == c).sum()), keywords=[IDS[int(np.flatnonzero(labels == c)[0])]], exemplar_id=IDS[int(np.flatnonzero(labels == c)[0])], exemplar_title="t", persistence=0.5)
        for c in range(n)
    ]


def _run(registry: ClusterRegistry, labels: list[int]):
    arr = np.array(labels)
    return registry.update(IDS, arr, _summaries(arr))


def _types(result) -> list[tuple[str, int]]:
    return sorted((e.type.value, e.cluster_id) for e in result.events)


def test_first_run_creates_every_cluster() -> None:
    """No history -> one created event per cluster, ids 1..n."""
    result = _run(ClusterRegistry(), [0] * 20 + [1] * 20 + [-1] * 20)
    assert result.stable_ids.tolist() == [1, 2]
    assert _types(result) == [("created", 1), ("created", 2)]


def test_unchanged_clustering_keeps_ids_without_events() -> None:
    """The same partition again: same ids, nothing to publish."""
    reg = ClusterRegistry()
    labels = [0] * 20 + [1] * 20 + [-1] * 20
    _run(reg, labels)
    again = _run(reg, [1] * 20 + [0] * 20 + [-1] * 20)  # local numbering swapped
    assert again.stable_ids.tolist() == [2, 1]
    assert again.events == []


def test_growth_is_an_update_not_a_birth() -> None:
    """A cluster that absorbed many new members keeps its id (continuation)."""
    reg = ClusterRegistry()
    _run(reg, [0] * 5 + [-1] * 55)
    grown = _run(reg, [0] * 40 + [-1] * 20)
    assert grown.stable_ids.tolist() == [1]
    assert _types(grown) == [("updated", 1)]


def test_merge_emits_merged_and_retires_the_absorbed_id() -> None:
    """Two clusters become one: the larger overlap keeps its id, the other is merged into it."""
    reg = ClusterRegistry()
    _run(reg, [0] * 20 + [1] * 15 + [-1] * 25)
    merged = _run(reg, [0] * 35 + [-1] * 25)
    assert merged.stable_ids.tolist() == [1]
    event = next(e for e in merged.events if e.type == T.MERGED)
    assert event.cluster_id == 1 and event.merged_from == [2]
    assert 2 not in reg.clusters and not any(e.type == T.EXPIRED for e in merged.events)


def test_split_emits_split_and_created_with_parent() -> None:
    """One cluster becomes two: the larger part keeps the id, the other is created with split_from."""
    reg = ClusterRegistry()
    _run(reg, [0] * 40 + [-1] * 20)
    split = _run(reg, [0] * 25 + [1] * 15 + [-1] * 20)
    assert split.stable_ids.tolist() == [1, 2]
    split_event = next(e for e in split.events if e.type == T.SPLIT)
    created = next(e for e in split.events if e.type == T.CREATED)
    assert split_event.cluster_id == 1 and split_event.split_into == [2]
    assert created.cluster_id == 2 and created.split_from == 1


def test_vanished_cluster_expires() -> None:
    """A cluster whose members left (or turned to noise) is expired, size 0."""
    reg = ClusterRegistry()
    _run(reg, [0] * 20 + [1] * 20 + [-1] * 20)
    gone = _run(reg, [0] * 20 + [-1] * 40)
    expired = [e for e in gone.events if e.type == T.EXPIRED]
    assert [(e.cluster_id, e.size) for e in expired] == [(2, 0)]


def test_state_round_trip_keeps_ids_across_restart() -> None:
    """A registry restored from its state continues the numbering and matches the old clusters."""
    reg = ClusterRegistry()
    _run(reg, [0] * 20 + [1] * 20 + [-1] * 20)
    restored = ClusterRegistry()
    restored.load_state(reg.to_state())
    again = _run(restored, [0] * 20 + [1] * 20 + [2] * 20)
    assert again.stable_ids.tolist() == [1, 2, 3]
    assert _types(again) == [("created", 3)]
    assert again.run_id == 2


def test_event_ids_are_deterministic() -> None:
    """The same run produces the same event ids (duplicates after a crash can be dropped)."""
    a, b = ClusterRegistry(), ClusterRegistry()
    labels = [0] * 30 + [-1] * 30
    assert [e.event_id for e in _run(a, labels).events] == [e.event_id for e in _run(b, labels).events]


def test_bad_thresholds_are_rejected() -> None:
    """Thresholds outside (0, 1] are refused."""
    with pytest.raises(ValueError):
        ClusterRegistry(match_threshold=0)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n_old=st.integers(1, 30), n_new=st.integers(1, 30), density=st.floats(0.02, 0.5))
def test_matching_per_component_reaches_the_dense_optimum(seed: int, n_old: int, n_new: int, density: float) -> None:
    """The per-component assignment scores the same total Jaccard as one dense Hungarian over all clusters."""
    from collections import Counter

    from scipy.optimize import linear_sum_assignment

    from streamer.core.matching import _match_by_jaccard

    rng = np.random.default_rng(seed)
    old_sizes = rng.integers(5, 50, n_old).tolist()
    new_sizes = rng.integers(5, 50, n_new).tolist()
    overlap: Counter[tuple[int, int]] = Counter()
    for o in range(n_old):
        for c in range(n_new):
            if rng.random() < density:
                overlap[(o, c)] = int(rng.integers(1, min(old_sizes[o], new_sizes[c]) + 1))
    dense = np.zeros((n_old, n_new))
    for (o, c), ov in overlap.items():
        dense[o, c] = ov / (old_sizes[o] + new_sizes[c] - ov)
    rows, cols = linear_sum_assignment(dense, maximize=True)
    best = dense[rows, cols].sum()
    matches = _match_by_jaccard(overlap, old_sizes, new_sizes, threshold=1e-12)
    assert len(set(matches.values())) == len(matches)  # one new cluster per old one
    assert sum(dense[o, c] for c, o in matches.items()) == pytest.approx(best)
