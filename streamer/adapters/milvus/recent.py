"""A Milvus server's neighbour searches without waiting for its time tick.

A Strong search on a Milvus server waits until its query nodes have consumed every write
acknowledged before it: on the 2.3 standalone server that is 300-500 ms per search (the
time tick), most of an arrival's latency budget. A Bounded search answers at once (~5 ms)
but may miss the writes of the last ``common.gracefulTime`` (5 s by default).

:class:`RecentOverlayStore` searches Bounded and adds what Bounded may miss of its own
writes: it keeps the vectors this process upserted in the last ``keep_s`` seconds and
answers each query from both, the overlay's copy winning for an id both return (an upsert
that Milvus does not show yet). It also remembers the ids it deleted in the last ``keep_s``
seconds and drops them from Bounded answers, which may still show them. A row older than
``keep_s`` is past the server's staleness bound, so the merged answer holds every row this
process wrote and none it deleted, as a Strong search would.
Rows another process (another ingest replica) wrote in the last few seconds can be missing;
the re-clusterer reads every arrival and places again those that were published as noise
(:mod:`streamer.service.replica_arrivals`).

Everything but ``search`` goes to the wrapped store unchanged. Thread-safe: the ingest loop
calls it from worker threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from streamer.adapters.milvus.wrapper import StoreWrapper
from streamer.domain.headline import Headline

__all__ = ["RecentOverlayStore"]


class RecentOverlayStore(StoreWrapper):
    """A :class:`~streamer.domain.ports.VectorStore`: Bounded Milvus searches plus this process's recent writes."""

    def __init__(
        self,
        store: Any,
        *,
        keep_s: float,
        max_rows: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if keep_s <= 0 or max_rows < 1:
            raise ValueError(f"keep_s must be > 0 and max_rows >= 1, got {keep_s}, {max_rows}")
        super().__init__(store)
        self._keep_s = keep_s
        self._max_rows = max_rows
        self._clock = clock
        # id -> (written at, vector), oldest first; an upsert moves its id to the end.
        self._recent: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()
        # id -> deleted at, oldest first: Bounded searches may show these for up to keep_s.
        self._deleted: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    # -- writes ----------------------------------------------------------------------------------
    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        self._store.upsert(headlines, vectors)
        now = self._clock()
        with self._lock:
            for h, vector in zip(headlines, np.asarray(vectors, dtype=np.float32), strict=True):
                self._recent.pop(h.id, None)
                self._recent[h.id] = (now, vector)
                self._deleted.pop(h.id, None)
            self._prune_locked(now)

    def delete(self, ids: list[str]) -> None:
        self._store.delete(ids)
        now = self._clock()
        with self._lock:
            for hid in ids:
                self._recent.pop(hid, None)
                self._deleted.pop(hid, None)
                self._deleted[hid] = now
            self._prune_locked(now)

    def _prune_locked(self, now: float) -> None:
        # max_rows bounds memory only: 50,000 rows in keep_s is far above what the model embeds.
        while self._recent:
            written, _ = next(iter(self._recent.values()))
            if now - written <= self._keep_s and len(self._recent) <= self._max_rows:
                break
            self._recent.popitem(last=False)
        while self._deleted:
            deleted = next(iter(self._deleted.values()))
            if now - deleted <= self._keep_s and len(self._deleted) <= self._max_rows:
                break
            self._deleted.popitem(last=False)

    def __len__(self) -> int:
        """Rows held in the overlay now."""
        with self._lock:
            return len(self._recent)

    # -- reads -----------------------------------------------------------------------------------
    def search(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-``limit`` neighbours of each query from Milvus (Bounded) and the overlay, best first."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._lock:
            self._prune_locked(self._clock())
            extra = min(len(self._deleted), limit)  # answers a deleted row may take from the top
        ids, sims = self._store.search(vectors, limit + extra, consistency="Bounded")
        with self._lock:
            self._prune_locked(self._clock())
            deleted = set(self._deleted)
            if (not self._recent and not deleted) or len(vectors) == 0:
                return [row[:limit] for row in ids], sims[:, :limit]
            recent_ids = list(self._recent)
            matrix = np.stack([v for _, v in self._recent.values()]) if self._recent else None
        recent_sims = (np.asarray(vectors, dtype=np.float32) @ matrix.T if matrix is not None
                       else np.zeros((len(vectors), 0), dtype=np.float32))
        merged_ids: list[list[str]] = []
        merged = np.full((len(vectors), limit), -np.inf, dtype=np.float32)
        for q, (row_ids, row_recent) in enumerate(zip(ids, recent_sims, strict=True)):
            best: dict[str, float] = {
                hid: float(s) for hid, s in zip(row_ids, sims[q], strict=False) if hid not in deleted
            }
            top = np.argsort(-row_recent)[:limit]
            for j in top.tolist():
                best[recent_ids[j]] = float(row_recent[j])  # the overlay's copy is this process's latest write
            ranked = sorted(best.items(), key=lambda item: -item[1])[:limit]
            merged_ids.append([hid for hid, _ in ranked])
            merged[q, : len(ranked)] = [s for _, s in ranked]
        return merged_ids, merged
