"""Rows the store holds that the re-clusterer's window has not seen (other writers, a restart).

Ids first, then vectors only for the ids the window and the arrival buffer lack: on a single
instance that is nothing, and reading vectors back through Milvus Lite takes the collection's
lock long enough (~0.3 s per 1,000 rows) to stall the ingest loop. With ``every_run`` off (Milvus
Lite: this process is the only writer; the split topology: arrivals come through Kafka) only
the first read after a :meth:`StoreCatchUp.reset` (start, takeover, a lost window) reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from streamer.core.window import CaughtUp
from streamer.domain.ports import VectorStore
from streamer.service.concurrency import BlockingRunner
from streamer.service.retry import Retrier

__all__ = ["StoreCatchUp"]

# Ingest instances stamp ingested_at with their own clocks: re-read a little before the last
# row seen so a slightly late clock cannot hide rows from the catch-up read.
_SLACK_MS = 10_000


class StoreCatchUp:
    """Reads the store's rows ingested since the last read, by ``ingested_at`` watermark."""

    def __init__(self, store: VectorStore, runner: BlockingRunner, dim: int, *, every_run: bool) -> None:
        self._store = store
        self._runner = runner
        self._dim = dim
        self._every_run = every_run
        self._watermark_ms = 0

    def reset(self) -> None:
        """Read everything again next time (the window was lost, dropped or may be stale)."""
        self._watermark_ms = 0

    async def read(self, retrier: Retrier, known: Callable[[str], bool]) -> CaughtUp:
        """The rows not ``known`` (in the window or buffered) that the store holds."""
        nothing: CaughtUp = ([], np.zeros((0, self._dim), np.float32), [])
        if self._watermark_ms and not self._every_run:
            return nothing
        since = max(0, self._watermark_ms - _SLACK_MS) if self._watermark_ms else 0
        started_ms = int(time.time() * 1000)
        ids = await retrier.run("recluster", "milvus", lambda: self._runner.run(self._store.ids_since, since))
        missing = [hid for hid in ids if not known(hid)]
        found = nothing
        if missing:
            found = await retrier.run("recluster", "milvus", lambda: self._runner.run(self._store.fetch_rows, missing))
        # Next time, read from a little before this read began (rows stamped meanwhile are re-listed, not lost).
        self._watermark_ms = max(self._watermark_ms, started_ms)
        return found
