"""RecentOverlayStore's edges, against a store double that shows only what a Bounded search would."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamer.adapters.milvus.recent import RecentOverlayStore
from streamer.domain.headline import Headline
from tests.unit.helpers import unit_rows


class _LaggingStore:
    """Shows writes and deletes to searches only after ``visible()`` (a server's staleness)."""

    def __init__(self) -> None:
        self.rows: dict[str, np.ndarray] = {}
        self.shown: dict[str, np.ndarray] = {}
        self.consistency: list[Any] = []

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        for h, v in zip(headlines, vectors, strict=True):
            self.rows[h.id] = v

    def delete(self, ids: list[str]) -> None:
        for hid in ids:
            self.rows.pop(hid, None)

    def visible(self) -> None:
        self.shown = dict(self.rows)

    def search(self, vectors: np.ndarray, limit: int, consistency: str | None = None) -> tuple[list[list[str]], np.ndarray]:
        self.consistency.append(consistency)
        sims = np.full((len(vectors), limit), -np.inf, dtype=np.float32)
        ids: list[list[str]] = []
        keys = list(self.shown)
        for q, v in enumerate(vectors):
            scored = sorted(((float(v @ self.shown[k]), k) for k in keys), reverse=True)[:limit]
            ids.append([k for _, k in scored])
            sims[q, : len(scored)] = [s for s, _ in scored]
        return ids, sims


def _heads(n: int, start: int = 0) -> list[Headline]:
    return [Headline(id=f"h{i}", title=f"t{i}") for i in range(start, start + n)]


def test_rows_not_yet_shown_by_the_server_are_found_and_searches_are_bounded() -> None:
    inner, now = _LaggingStore(), [0.0]
    store = RecentOverlayStore(inner, keep_s=10.0, clock=lambda: now[0])
    vectors = unit_rows(np.random.default_rng(0).normal(size=(8, 6)))
    store.upsert(_heads(8), vectors)
    ids, sims = store.search(vectors, 2)
    assert [row[0] for row in ids] == [f"h{i}" for i in range(8)]
    assert np.allclose(sims[:, 0], 1.0, atol=1e-5) and sims.shape == (8, 2)
    assert inner.consistency == ["Bounded"]


def test_the_overlay_copy_wins_over_a_stale_server_row_and_deletes_leave_both() -> None:
    inner, now = _LaggingStore(), [0.0]
    store = RecentOverlayStore(inner, keep_s=10.0, clock=lambda: now[0])
    old = unit_rows(np.random.default_rng(1).normal(size=(4, 6)))
    store.upsert(_heads(4), old)
    inner.visible()
    new = unit_rows(np.random.default_rng(2).normal(size=(1, 6)))
    store.upsert(_heads(1), new)  # the server still shows h0's old vector
    ids, sims = store.search(new, 4)
    assert ids[0][0] == "h0" and sims[0, 0] == pytest.approx(1.0, abs=1e-5)
    assert ids[0].count("h0") == 1
    store.delete(["h1"])  # the server still shows h1
    ids, sims = store.search(old[1:2], 3)
    assert "h1" not in ids[0] and len(ids[0]) == 3 and np.isfinite(sims).all()  # still 3 answers (h0, h2, h3)
    store.upsert(_heads(1, start=1), old[1:2])  # written again: found again
    assert store.search(old[1:2], 1)[0][0] == ["h1"]
    now[0] = 60.0  # past keep_s the server's view is trusted again
    inner.delete(["h2"])
    inner.visible()
    assert "h2" not in store.search(old[2:3], 4)[0][0]


def test_rows_leave_the_overlay_after_keep_s_or_past_max_rows() -> None:
    inner, now = _LaggingStore(), [0.0]
    store = RecentOverlayStore(inner, keep_s=5.0, max_rows=6, clock=lambda: now[0])
    vectors = unit_rows(np.random.default_rng(3).normal(size=(10, 6)))
    store.upsert(_heads(4), vectors[:4])
    now[0] = 3.0
    store.upsert(_heads(4, start=4), vectors[4:8])
    assert len(store) == 6  # max_rows: the two oldest went
    now[0] = 6.0
    store.search(vectors[:1], 3)
    assert len(store) == 4  # the first batch is older than keep_s
    now[0] = 9.0
    store.search(vectors[:1], 3)
    assert len(store) == 0
    # Past the overlay, the server answers alone (here: nothing shown yet, nothing found).
    assert store.search(vectors[:2], 3)[0] == [[], []]


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="keep_s"):
        RecentOverlayStore(_LaggingStore(), keep_s=0)
    with pytest.raises(ValueError, match="limit"):
        RecentOverlayStore(_LaggingStore(), keep_s=1).search(np.zeros((1, 6), np.float32), 0)
