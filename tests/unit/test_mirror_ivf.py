"""The search mirror past ``exact_below`` rows: an inverted-file index with high recall that
still honours every upsert and delete, also those made while it trains in the background.
(The exact regime is checked against Milvus Lite itself in tests/integration/test_store.py.)"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamer.adapters.milvus.mirror import MirroredStore
from streamer.domain.headline import Headline
from tests.unit.helpers import unit_rows


class _NoMilvus:
    """The wrapped store: the mirror writes through to it; nothing is read back here."""

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        return None

    def delete(self, ids: list[str]) -> None:
        return None

    def fetch_all(self, fields: tuple[str, ...] = ()) -> tuple[list[str], np.ndarray, list[dict]]:
        return [], np.zeros((0, DIM), np.float32), []


DIM = 48


def _stories(n_stories: int, per_story: int, seed: int = 0) -> np.ndarray:
    """Headline-like vectors: tight groups around random directions, in random order."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_stories, DIM))
    x = np.repeat(centres, per_story, axis=0) + 0.35 * rng.normal(size=(n_stories * per_story, DIM))
    return unit_rows(x[rng.permutation(len(x))])


def _heads(ids: list[str]) -> list[Headline]:
    return [Headline(id=i, title=i) for i in ids]


def _fill(mirror: MirroredStore, x: np.ndarray, batch: int = 500) -> list[str]:
    ids = [f"h{i}" for i in range(len(x))]
    for start in range(0, len(x), batch):
        mirror.upsert(_heads(ids[start : start + batch]), x[start : start + batch])
    return ids


def _exact(x: np.ndarray, ids: list[str], queries: np.ndarray, k: int) -> list[list[str]]:
    order = np.argsort(-(queries @ x.T), axis=1)[:, :k]
    return [[ids[j] for j in row] for row in order]


def test_below_the_threshold_searches_are_exact() -> None:
    x = _stories(40, 25)
    mirror = MirroredStore(_NoMilvus(), DIM, exact_below=5_000)
    ids = _fill(mirror, x)
    found, _ = mirror.search(x[:50], 10)
    assert mirror.exact and found == _exact(x, ids, x[:50], 10)


def test_past_the_threshold_recall_stays_high() -> None:
    """8,000 rows with the index switched on at 2,000 (retrained at 4,000 and 8,000)."""
    x = _stories(400, 20)
    mirror = MirroredStore(_NoMilvus(), DIM, exact_below=2_000, nprobe=32, train_in_background=False)
    ids = _fill(mirror, x)
    assert not mirror.exact
    queries = x[::40]
    found, sims = mirror.search(queries, 15)
    truth = _exact(x, ids, queries, 15)
    recall = np.mean([len(set(f) & set(t)) / 15 for f, t in zip(found, truth, strict=True)])
    assert recall >= 0.95
    assert all(f[0] == t[0] for f, t in zip(found, truth, strict=True))  # each query finds itself first
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first


def test_past_the_threshold_deletes_and_upserts_are_honoured() -> None:
    x = _stories(200, 20, seed=1)
    mirror = MirroredStore(_NoMilvus(), DIM, exact_below=1_000, train_in_background=False)
    ids = _fill(mirror, x)
    assert not mirror.exact
    gone = ids[:300]
    mirror.delete(gone)
    found, _ = mirror.search(x[:300], 10)
    assert not set(gone) & {hid for row in found for hid in row}
    assert len(mirror) == len(ids) - 300
    # An upsert replaces the row: the old vector no longer finds it, the new one does.
    moved = unit_rows(-x[400:401])
    mirror.upsert(_heads([ids[400]]), moved)
    assert mirror.search(moved, 1)[0] == [[ids[400]]]
    assert ids[400] not in mirror.search(x[400:401], 5)[0][0]


@pytest.mark.parametrize("held", ["_copy_rows", "_train"])
def test_writes_made_while_the_index_trains_reach_the_new_index(monkeypatch: pytest.MonkeyPatch, held: str) -> None:
    """The background training is held (before it copies the rows, or before k-means) until the
    test has upserted, replaced and deleted rows: searches are answered meanwhile, and the index
    swapped in afterwards holds exactly the current rows."""
    x = _stories(150, 20, seed=2)
    mirror = MirroredStore(_NoMilvus(), DIM, exact_below=1_000)
    started, release = threading.Event(), threading.Event()
    step = getattr(mirror, held)

    def held_step(*args: object) -> object:
        started.set()
        assert release.wait(30)
        return step(*args)

    monkeypatch.setattr(mirror, held, held_step)
    ids = _fill(mirror, x[:1_000])  # reaches the threshold: a training starts in the background
    assert started.wait(10) and mirror.exact
    later = [f"h{i}" for i in range(1_000, len(x))]
    mirror.upsert(_heads(later), x[1_000:])
    mirror.delete(ids[:100])
    replaced = unit_rows(-x[200:201])
    mirror.upsert(_heads([ids[200]]), replaced)
    found, _ = mirror.search(x[1_000:1_010], 1)  # answered by the exact index while training waits
    assert found == [[hid] for hid in later[:10]]

    release.set()
    assert mirror.wait_for_index(30) and not mirror.exact
    assert len(mirror) == len(x) - 100
    found, _ = mirror.search(x[1_000::50], 1)
    assert found == [[later[i]] for i in range(0, len(later), 50)]
    assert not set(ids[:100]) & {hid for row in mirror.search(x[:100], 10)[0] for hid in row}
    assert mirror.search(replaced, 1)[0] == [[ids[200]]]
    assert ids[200] not in mirror.search(x[200:201], 5)[0][0]
