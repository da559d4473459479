"""The clustering window: headlines, their vectors and a kNN graph kept up to date.

Arrivals come with the neighbour lists their Milvus search already found; each
list becomes the arrival's row. :meth:`WindowGraph.link_new_rows` then inserts
each arrival into every row it beats (reverse update), exactly, with one blocked
matrix product of the new rows against the window. Expiry frees rows and
leaves the rows that pointed at them short; :meth:`WindowGraph.repair` refills
those with an exact search over the window's vectors. When too many rows were
repaired since the last full build the graph has drifted from the exact one and
:meth:`WindowGraph.needs_rebuild` says so.

Rows are slots in preallocated arrays (grown by doubling), so a re-clustering
costs HDBSCAN on the exported table, not N searches.
Pure numpy/faiss; no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamer.core.graph import NeighbourTable, knn_exact, knn_hnsw, knn_ivf

__all__ = ["WindowGraph", "WindowExport"]

_EMPTY = -1


@dataclass(frozen=True)
class WindowExport:
    """A compact copy of the window: positions 0..n-1 in ``ids`` order."""

    ids: list[str]
    titles: list[str]
    event_times_ms: np.ndarray
    vectors: np.ndarray
    table: NeighbourTable


class WindowGraph:
    """Headlines in the window with their top-k neighbour rows.

    Parameters
    ----------
    k:
        Neighbours per row.
    dim:
        Vector dimension.
    """

    def __init__(self, k: int, dim: int, *, capacity: int = 1024) -> None:
        if k < 1 or dim < 1:
            raise ValueError(f"k and dim must be positive, got k={k}, dim={dim}")
        self.k = k
        self.dim = dim
        self._slot_of: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._titles: list[str] = []
        self._free: list[int] = []
        self._vectors = np.zeros((0, dim), np.float32)
        self._times = np.zeros(0, np.int64)
        self._nbr = np.zeros((0, k), np.int64)
        self._sim = np.zeros((0, k), np.float32)
        self._grow(capacity)
        self._short: set[int] = set()
        self._unlinked: set[int] = set()
        self.repaired_since_build = 0

    # -- storage -------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        old = len(self._ids)
        if capacity <= old:
            return
        extra = capacity - old
        self._vectors = np.vstack([self._vectors, np.zeros((extra, self.dim), np.float32)])
        self._times = np.concatenate([self._times, np.zeros(extra, np.int64)])
        self._nbr = np.vstack([self._nbr, np.full((extra, self.k), _EMPTY, np.int64)])
        self._sim = np.vstack([self._sim, np.full((extra, self.k), -np.inf, np.float32)])
        self._ids.extend([None] * extra)
        self._titles.extend([""] * extra)
        self._free.extend(range(capacity - 1, old - 1, -1))  # pop() hands out low slots first

    def _take_slot(self) -> int:
        if not self._free:
            self._grow(max(1024, 2 * len(self._ids)))
        return self._free.pop()

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, headline_id: object) -> bool:
        return headline_id in self._slot_of

    @property
    def ids(self) -> list[str]:
        return list(self._slot_of)

    # -- rows ----------------------------------------------------------------------------
    def _insert_neighbour(self, row: int, other: int, sim: float) -> bool:
        """Put ``other`` into ``row``'s list if it beats the worst entry; keeps the list sorted."""
        nbrs, sims = self._nbr[row], self._sim[row]
        if sim <= sims[-1] or other in nbrs:
            return False
        pos = int(np.searchsorted(-sims, -sim, side="right"))
        nbrs[pos + 1 :] = nbrs[pos:-1].copy()
        sims[pos + 1 :] = sims[pos:-1].copy()
        nbrs[pos], sims[pos] = other, sim
        return True

    def _set_row(self, row: int, neighbour_ids: list[str], sims: np.ndarray) -> None:
        self._nbr[row] = _EMPTY
        self._sim[row] = -np.inf
        col = 0
        for hid, sim in zip(neighbour_ids, sims, strict=False):
            other = self._slot_of.get(hid)
            if other is None or other == row or not np.isfinite(sim) or other in self._nbr[row, :col]:
                continue
            self._nbr[row, col], self._sim[row, col] = other, sim
            col += 1
            if col == self.k:
                break
        if col < self.k:
            self._short.add(row)
        else:
            self._short.discard(row)

    def add(
        self,
        ids: list[str],
        titles: list[str],
        event_times_ms: list[int],
        vectors: np.ndarray,
        neighbour_ids: list[list[str]] | None = None,
        neighbour_sims: np.ndarray | None = None,
    ) -> int:
        """Add (or refresh) headlines; returns how many were new.

        ``neighbour_ids``/``neighbour_sims`` are each headline's search result (best
        first, may include itself and ids outside the window). Without them the rows
        are left short and filled by :meth:`repair`.
        """
        if not (len(ids) == len(titles) == len(event_times_ms) == len(vectors)):
            raise ValueError("ids, titles, event_times_ms and vectors must have the same length")
        slots = []
        new = 0
        for hid, title, t, vec in zip(ids, titles, event_times_ms, vectors, strict=True):
            slot = self._slot_of.get(hid)
            if slot is None:
                slot = self._take_slot()
                self._slot_of[hid] = slot
                self._ids[slot] = hid
                new += 1
            self._titles[slot] = title
            self._times[slot] = t
            self._vectors[slot] = vec
            slots.append(slot)
        if neighbour_ids is None or neighbour_sims is None:
            self._short.update(slots)
            self._unlinked.update(slots)
            return new
        for slot, hits, sims in zip(slots, neighbour_ids, neighbour_sims, strict=True):
            self._set_row(slot, hits, sims)
        self._unlinked.update(slots)
        return new

    def link_new_rows(self, *, block_size: int = 2048) -> int:
        """Exact reverse updates for rows added since the last call; returns how many were linked.

        kNN is asymmetric: a row with a wide neighbourhood can need a newcomer that is not among
        the newcomer's own search hits. One blocked product of the new rows against the window
        (``len(new) x n x dim`` flops) finds every row that a newcomer beats.
        """
        new_slots = np.fromiter((s for s in self._unlinked if self._ids[s] is not None), np.int64)
        self._unlinked.clear()
        if new_slots.size == 0 or len(self) < 2:
            return 0
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        new_vectors = self._vectors[new_slots]
        for start in range(0, active.size, block_size):
            rows = active[start : start + block_size]
            sims = self._vectors[rows] @ new_vectors.T  # (rows, new)
            worst = self._sim[rows, -1]
            hit_r, hit_c = np.nonzero(sims > worst[:, None])
            for r, c in zip(hit_r.tolist(), hit_c.tolist(), strict=True):
                row, other = int(rows[r]), int(new_slots[c])
                if row != other:
                    self._insert_neighbour(row, other, float(sims[r, c]))
        return int(new_slots.size)

    def remove(self, ids: list[str]) -> int:
        """Drop headlines; rows that pointed at them become short. Returns how many were present."""
        slots = [self._slot_of.pop(hid) for hid in ids if hid in self._slot_of]
        if not slots:
            return 0
        gone = np.asarray(slots, np.int64)
        for slot in slots:
            self._ids[slot] = None
            self._titles[slot] = ""
            self._nbr[slot] = _EMPTY
            self._sim[slot] = -np.inf
            self._free.append(slot)
            self._short.discard(slot)
            self._unlinked.discard(slot)
        hit_rows = np.flatnonzero(np.isin(self._nbr, gone).any(axis=1))
        for row in hit_rows:
            keep = ~np.isin(self._nbr[row], gone) & (self._nbr[row] != _EMPTY)
            kept = int(keep.sum())
            self._nbr[row, :kept] = self._nbr[row][keep]
            self._sim[row, :kept] = self._sim[row][keep]
            self._nbr[row, kept:] = _EMPTY
            self._sim[row, kept:] = -np.inf
            self._short.add(int(row))
        return len(slots)

    def newest_event_time_ms(self) -> int:
        """Largest event time in the window (the window's own clock); 0 when empty."""
        if not self._slot_of:
            return 0
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        return int(self._times[active].max())

    def expire(self, older_than_ms: int, max_size: int) -> list[str]:
        """Ids to expire: event time before ``older_than_ms``, then the oldest beyond ``max_size``."""
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        if active.size == 0:
            return []
        times = self._times[active]
        old = active[times < older_than_ms]
        remaining = active[times >= older_than_ms]
        if remaining.size > max_size:
            order = np.argsort(self._times[remaining], kind="stable")
            old = np.concatenate([old, remaining[order[: remaining.size - max_size]]])
        return [self._ids[s] for s in old.tolist()]  # type: ignore[misc]

    # -- maintenance ---------------------------------------------------------------------
    @property
    def short_rows(self) -> int:
        return len(self._short)

    def needs_rebuild(self, drift_share: float) -> bool:
        return self.repaired_since_build > drift_share * max(len(self), 1)

    def repair(self) -> int:
        """Refill short rows by exact search over the window; returns rows repaired."""
        if not self._short or len(self) < 2:
            return 0
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        rows = np.fromiter(self._short, np.int64, len(self._short))
        import faiss

        index = faiss.IndexFlatIP(self.dim)
        index.add(self._vectors[active])
        want = min(self.k + 1, len(active))
        sims, pos = index.search(self._vectors[rows], want)
        for row, row_pos, row_sims in zip(rows, pos, sims, strict=True):
            hits = [self._ids[int(active[p])] for p in row_pos if p >= 0]
            self._set_row(int(row), hits, row_sims[: len(hits)])  # type: ignore[arg-type]
            for other, sim in zip(self._nbr[row], self._sim[row], strict=True):
                if other == _EMPTY:
                    break
                self._insert_neighbour(int(other), int(row), float(sim))
        self._short.clear()  # rows still short now have fewer than k other points in the window
        self.repaired_since_build += len(rows)
        return len(rows)

    def rebuild(self, *, method: str = "exact") -> None:
        """Recompute every row from scratch (exact, ivf or hnsw)."""
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        self._nbr[:] = _EMPTY
        self._sim[:] = -np.inf
        if active.size >= 2:
            search = {"hnsw": knn_hnsw, "ivf": knn_ivf}.get(method, knn_exact)
            table = search(self._vectors[active], self.k)
            valid = table.indices >= 0
            mapped = np.where(valid, active[np.where(valid, table.indices, 0)], _EMPTY)
            self._nbr[active] = mapped
            self._sim[active] = np.where(valid, table.similarities, -np.inf)
        self._short.clear()
        self._unlinked.clear()
        self.repaired_since_build = 0

    def export(self) -> WindowExport:
        """Compact copy: positions follow insertion order of the current ids."""
        active = np.fromiter(self._slot_of.values(), np.int64, len(self._slot_of))
        position = np.full(len(self._ids), _EMPTY, np.int64)
        position[active] = np.arange(active.size)
        nbr = self._nbr[active]
        mapped = np.where(nbr >= 0, position[np.where(nbr >= 0, nbr, 0)], _EMPTY)
        sims = np.where(mapped >= 0, self._sim[active], -np.inf).astype(np.float32)
        # Entries whose target slot was reused cannot occur: remove() clears every reference.
        return WindowExport(
            ids=[self._ids[s] for s in active.tolist()],  # type: ignore[misc]
            titles=[self._titles[s] for s in active.tolist()],
            event_times_ms=self._times[active].copy(),
            vectors=self._vectors[active].copy(),
            table=NeighbourTable(mapped, sims),
        )
