"""An in-process copy of the collection's vectors that answers the arrivals' neighbour searches.

Milvus Lite searches in Python and materialises every hit's whole row (vector and text
included) to return ids it was not asked for: 196 ms per 64-arrival batch at 3k rows, more
than embedding the batch (docs/benchmarks.md), and growing with the collection. Lite is one
process per database file, so that process sees every write: a mirror of the vectors beside
it is exact. :class:`MirroredStore` wraps the store, keeps a faiss ``IndexIDMap2`` over an
exact inner-product index in step with every upsert and delete, and answers ``search`` from
it; everything else goes to Milvus. Vectors are unit length, so inner product is Milvus'
COSINE. A Milvus server searches fast on its own and is not mirrored.

Thread-safe: the ingest loop and the re-clusterer call it from worker threads.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from streamer.logs import get_logger
from streamer.schema import Headline

__all__ = ["MirroredStore"]

log = get_logger(__name__)


class MirroredStore:
    """A :class:`~streamer.schema.VectorStore` whose searches come from an in-process faiss index."""

    def __init__(self, store: Any, dim: int) -> None:
        import faiss

        self._store = store
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_key = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # every other store method goes to Milvus as it is
        return getattr(self._store, name)

    def __len__(self) -> int:
        return len(self._key_of)

    def load(self) -> MirroredStore:
        """Copy every stored vector (at start: the collection may hold a previous run's rows)."""
        ids, vectors, _ = self._store.fetch_all(fields=())
        self._add(ids, vectors)
        log.info("search mirror loaded", rows=len(ids))
        return self

    def _add(self, ids: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            self._remove_locked([hid for hid in ids if hid in self._key_of])  # upsert replaces
            keys = np.arange(self._next_key, self._next_key + len(ids), dtype=np.int64)
            self._next_key += len(ids)
            for key, hid in zip(keys.tolist(), ids, strict=True):
                self._key_of[hid] = key
                self._id_of[key] = hid
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), keys)

    def _remove_locked(self, ids: list[str]) -> None:
        keys = [self._key_of.pop(hid) for hid in ids if hid in self._key_of]
        if keys:
            for key in keys:
                del self._id_of[key]
            self._index.remove_ids(np.asarray(keys, dtype=np.int64))

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        self._store.upsert(headlines, vectors)  # Milvus first: the mirror never holds what Milvus lacks
        self._add([h.id for h in headlines], vectors)

    def delete(self, ids: list[str]) -> None:
        self._store.delete(ids)
        with self._lock:
            self._remove_locked(list(ids))

    def search(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        """Top-``limit`` neighbours of each query (ids best first; similarities padded with -inf), as Milvus returns."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        with self._lock:
            n = self._index.ntotal
            sims = np.full((len(vectors), limit), -np.inf, dtype=np.float32)
            if n == 0 or len(vectors) == 0:
                return [[] for _ in range(len(vectors))], sims
            found_sims, keys = self._index.search(np.ascontiguousarray(vectors, dtype=np.float32), min(limit, n))
            ids = [[self._id_of[int(k)] for k in row if k >= 0] for row in keys]
        sims[:, : found_sims.shape[1]] = np.where(keys >= 0, found_sims, -np.inf)
        return ids, sims

