"""Write-behind: a published batch's Milvus write and offset commit, queued in batch order.

Why: Milvus Lite blocks its writers for a whole flush (0.15-0.4 s every ``lite_flush_rows``);
with the write on the event path every arrival queued behind a flush waited for it. With a
:class:`~streamer.domain.ports.StagingStore` a batch is searchable once staged, so its events
go out then and only durability is left: the write and the commit follow, the commit still
after both the events' acks and the write, so a crash before it redelivers the batch (same
event ids). Writes and commits stay in batch order (each waits for the one before; after a
failed one nothing later is committed), and at most ``max_unstored`` records wait. The bound
counts every record read, not only valid headlines: a batch of nothing but dead letters still
queues a commit, and during a Milvus outage such batches must not pile up behind the blocked
write.
"""

from __future__ import annotations

import asyncio
from collections import deque

import numpy as np

from streamer.domain.headline import Headline
from streamer.domain.ports import HeadlineSource, StagingStore
from streamer.observability.metrics import Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.retry import Retrier

__all__ = ["WriteBehind"]


class WriteBehind:
    """The queue of "write to Milvus, then commit" steps of published batches."""

    def __init__(
        self,
        *,
        staging: StagingStore,
        source: HeadlineSource,
        runner: BlockingRunner,
        metrics: Metrics,
        max_unstored: int,
    ) -> None:
        self.staging = staging
        self._source = source
        self._runner = runner
        self._metrics = metrics
        self._max_unstored = max_unstored
        #: Each published batch's write-then-commit task and its record count, oldest first.
        self._writes: deque[tuple[asyncio.Task[None], int]] = deque()

    async def enqueue(
        self,
        headlines: list[Headline],
        vectors: np.ndarray | None,
        next_offsets: dict[tuple[str, int], int],
        retrier: Retrier,
        records: int,
    ) -> None:
        """Queue the batch's write and commit behind the batches before it (waits while the queue is full)."""
        self._raise_if_a_write_failed()
        while self._writes and self.unstored() + records > self._max_unstored:
            await asyncio.shield(self._writes[0][0])  # back-pressure: the oldest write finishes first
            self._forget_finished()
        previous = self._writes[-1][0] if self._writes else None
        task = asyncio.create_task(
            self._write_and_commit(previous, headlines, vectors, next_offsets, retrier), name="streamer-write"
        )
        self._writes.append((task, records))
        self._forget_finished()

    async def _write_and_commit(
        self,
        previous: asyncio.Task[None] | None,
        headlines: list[Headline],
        vectors: np.ndarray | None,
        next_offsets: dict[tuple[str, int], int],
        retrier: Retrier,
    ) -> None:
        if previous is not None:
            await previous  # its failure is this batch's too: never commit past a gap
        if headlines and vectors is not None:
            with self._metrics.timed("upsert"):
                await retrier.run(
                    "upsert", "milvus", lambda: self._runner.run(self.staging.write_staged, headlines, vectors)
                )
        with self._metrics.timed("commit"):
            await retrier.run("commit", "kafka", lambda: self._source.commit(next_offsets))

    def unstored(self) -> int:
        """Records read whose batch's Milvus write (and commit) has not finished yet."""
        return sum(size for task, size in self._writes if not task.done())

    def _forget_finished(self) -> None:
        while self._writes and self._writes[0][0].done() and self._writes[0][0].exception() is None:
            self._writes.popleft()

    def _raise_if_a_write_failed(self) -> None:
        for task, _ in self._writes:
            error = task.exception() if task.done() else None
            if error is not None:
                raise error

    async def drain(self) -> None:
        """Wait until every queued batch is written and committed (stop, rebalance); raises a failed write's error."""
        while self._writes:
            task, _ = self._writes[0]
            await asyncio.shield(task)  # the others wait behind a failed one
            self._writes.popleft()

    async def settle(self) -> None:
        """Let every queued step end, failed or not (each stops at its first failed step), so no task outlives the loop."""
        await asyncio.gather(*(task for task, _ in self._writes), return_exceptions=True)
