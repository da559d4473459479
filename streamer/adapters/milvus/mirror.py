"""An in-process copy of the collection's vectors that answers the arrivals' neighbour searches.

Milvus Lite searches in Python and materialises every hit's whole row (vector and text
included) to return ids it was not asked for: 196 ms per 64-arrival batch at 3k rows, more
than embedding the batch (docs/benchmarks.md), and growing with the collection. Lite is one
process per database file, so that process sees every write: a mirror of the vectors beside
it is exact. :class:`MirroredStore` wraps the store, keeps a faiss ``IndexIDMap2`` over an
exact inner-product index in step with every upsert and delete, and answers ``search`` from
it; everything else goes to Milvus. Vectors are unit length, so inner product is Milvus'
COSINE. A Milvus server searches fast on its own and is not mirrored.

An exact search costs one pass over every vector: 21 ms per 64-arrival batch at 10k rows,
326 ms at 100k (docs/benchmarks.md), more than embedding the batch. From ``exact_below``
rows on, the mirror moves to an inverted-file index (faiss ``IndexIVFFlat``, √n lists
trained on the vectors it holds, ``nprobe`` lists searched per query), retrained whenever the
collection doubled or as many vectors came in as it was trained on (the window turned over); searches then look at ``nprobe``/√n of the vectors (10% at 100k rows). On UCI headlines
recall@31 is ~0.94 against the exact search, and the replay's clustering quality does not
move (``bench/mirror_search.py``, ``bench/stream_quality.py --mirror-exact-below``); a Milvus
server with HNSW makes the same trade.

A (re)training takes ~1 s at 100k rows, so it runs in a thread of its own on a copy of the
vectors while the current index keeps answering; the upserts and deletes that arrive
meanwhile are logged and replayed onto the new index before it is swapped in, so none is lost
and ingest never waits for k-means.

Thread-safe: the ingest loop and the re-clusterer call it from worker threads.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from streamer.adapters.milvus.wrapper import StoreWrapper
from streamer.domain.headline import Headline
from streamer.observability.logs import get_logger

__all__ = ["MirroredStore"]

log = get_logger(__name__)

#: A background training swaps its index in once no more than this many writes wait to be replayed.
_REPLAY_LOCKED_OPS = 8
#: Rows copied per lock hold when a background training reads the current vectors.
_COPY_SLICE = 8192


def _replay(index: Any, writes: list[tuple[np.ndarray, np.ndarray | None]]) -> int:
    """Apply logged writes in order (vectors None: a removal); returns the rows added."""
    added = 0
    for keys, vectors in writes:
        if vectors is None:
            index.remove_ids(keys)
        else:
            index.add_with_ids(vectors, keys)
            added += len(keys)
    return added


class MirroredStore(StoreWrapper):
    """A :class:`~streamer.domain.ports.VectorStore` whose searches come from an in-process faiss index."""

    def __init__(
        self, store: Any, dim: int, *, exact_below: int = 20_000, nprobe: int = 32, train_in_background: bool = True
    ) -> None:
        import faiss

        if exact_below < 1 or nprobe < 1:
            raise ValueError(f"exact_below and nprobe must be >= 1, got {exact_below}, {nprobe}")
        super().__init__(store)
        self._dim = dim
        self._exact_below = exact_below
        self._nprobe = nprobe
        self._train_in_background = train_in_background
        self._trained_on = 0  # rows the inverted-file index was trained on; 0 = exact search
        self._added_since_training = 0
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._key_of: dict[str, int] = {}
        self._id_of: dict[int, str] = {}
        self._next_key = 0
        self._lock = threading.Lock()
        # While a new index trains: the writes it has not seen, in order (None: no training).
        self._missed: list[tuple[np.ndarray, np.ndarray | None]] | None = None
        self._trainer: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._key_of)

    def load(self) -> MirroredStore:
        """Copy every stored vector (at start: the collection may hold a previous run's rows)."""
        ids, vectors, _ = self._store.fetch_all(fields=())
        self._add(ids, vectors)
        self.wait_for_index()  # nothing is searching yet: start with the index the rows call for
        log.info("search mirror loaded", rows=len(ids))
        return self

    def wait_for_index(self, timeout_s: float | None = None) -> bool:
        """Block until a background (re)training has been swapped in; False on timeout."""
        trainer = self._trainer
        if trainer is not None:
            trainer.join(timeout_s)
            return not trainer.is_alive()
        return True

    def _add(self, ids: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            self._remove_locked([hid for hid in ids if hid in self._key_of])  # upsert replaces
            keys = np.arange(self._next_key, self._next_key + len(ids), dtype=np.int64)
            self._next_key += len(ids)
            for key, hid in zip(keys.tolist(), ids, strict=True):
                self._key_of[hid] = key
                self._id_of[key] = hid
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self._index.add_with_ids(vectors, keys)
            if self._missed is not None:
                self._missed.append((keys, vectors))
            self._added_since_training += len(ids)
            self._maybe_reindex_locked()

    @property
    def exact(self) -> bool:
        """True while searches are exact (fewer than ``exact_below`` rows so far)."""
        return self._trained_on == 0

    def _maybe_reindex_locked(self) -> None:
        """Move to (or retrain) the inverted-file index once the collection is large enough."""
        n = self._index.ntotal
        if n < self._exact_below or self._missed is not None:  # too small, or a training is under way
            return
        if self._trained_on and n < 2 * self._trained_on and self._added_since_training < self._trained_on:
            return
        keys = np.fromiter(self._id_of, dtype=np.int64, count=len(self._id_of))
        self._missed = []  # from here on, every write is logged for the new index
        if not self._train_in_background:
            vectors = np.ascontiguousarray(self._index.reconstruct_batch(keys), dtype=np.float32)
            self._swap_in_locked(self._train(keys, vectors), len(keys))
            return
        self._trainer = threading.Thread(target=self._train_and_swap, args=(keys,), name="mirror-train", daemon=True)
        self._trainer.start()

    def _copy_rows(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The vectors of ``keys``, read a slice at a time (reading 100k rows at once holds the lock
        for ~0.2 s). A row removed meanwhile is left out: its removal is in the log too."""
        kept: list[np.ndarray] = []
        parts: list[np.ndarray] = []
        for start in range(0, len(keys), _COPY_SLICE):
            with self._lock:
                chunk = keys[start : start + _COPY_SLICE]
                chunk = chunk[[int(k) in self._id_of for k in chunk]] if len(chunk) else chunk
                if len(chunk):
                    parts.append(np.ascontiguousarray(self._index.reconstruct_batch(chunk), dtype=np.float32))
                    kept.append(chunk)
        if not kept:
            return np.zeros(0, np.int64), np.zeros((0, self._dim), np.float32)
        return np.concatenate(kept), np.vstack(parts)

    def _train(self, keys: np.ndarray, vectors: np.ndarray) -> Any:
        """A new inverted-file index over a copy of the rows (no lock held: searches go on)."""
        import faiss

        started = time.perf_counter()
        lists = max(1, int(np.sqrt(len(keys))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self._dim), self._dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = 64  # k-means on a sample: training stays ~1 s at 100k rows
        index.train(vectors)
        # A hashtable direct map: removals (upserts, expiry) and reconstruction for the next retrain.
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.add_with_ids(vectors, keys)
        index.nprobe = min(self._nprobe, lists)
        log.info("search mirror indexed", rows=len(keys), lists=lists, nprobe=index.nprobe,
                 s=round(time.perf_counter() - started, 2))
        return index

    def _train_and_swap(self, keys: np.ndarray) -> None:
        added = 0
        try:
            keys, vectors = self._copy_rows(keys)
            index = self._train(keys, vectors)
            # Catch up outside the lock while the writes keep coming (the new index is still private);
            # only the last few are replayed with the lock held, so ingest waits milliseconds.
            while True:
                with self._lock:
                    assert self._missed is not None
                    if len(self._missed) <= _REPLAY_LOCKED_OPS:
                        self._swap_in_locked(index, len(keys), added)
                        return
                    missed, self._missed = self._missed, []
                added += _replay(index, missed)
        except Exception as exc:  # keep serving from the current index; the next write retries
            log.exception("search mirror training failed", error=str(exc))
            with self._lock:
                self._missed = None

    def _swap_in_locked(self, index: Any, trained_on: int, added: int = 0) -> None:
        """Replay the writes the new index has not seen yet, then serve from it."""
        missed, self._missed = self._missed or [], None
        added += _replay(index, missed)
        self._index, self._trained_on, self._added_since_training = index, trained_on, added

    def _remove_locked(self, ids: list[str]) -> None:
        keys = [self._key_of.pop(hid) for hid in ids if hid in self._key_of]
        if keys:
            for key in keys:
                del self._id_of[key]
            removed = np.asarray(keys, dtype=np.int64)
            self._index.remove_ids(removed)
            if self._missed is not None:
                self._missed.append((removed, None))

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        self._store.upsert(headlines, vectors)  # Milvus first: the mirror never holds what Milvus lacks
        self._add([h.id for h in headlines], vectors)

    # -- write-behind (the ingest loop): searchable now, durable a little later ---------------
    def stage(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        """Make a batch searchable at once; :meth:`write_staged` stores it in Milvus afterwards.

        Until then the mirror holds rows Milvus lacks. That is safe because the ingest loop
        commits a batch only after its Milvus write, so a crash in between redelivers the batch
        and a restart rebuilds the mirror from Milvus alone.
        """
        self._add([h.id for h in headlines], vectors)

    def write_staged(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        """Store a staged batch in Milvus (the mirror already has it)."""
        self._store.upsert(headlines, vectors)

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

