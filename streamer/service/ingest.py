"""The ingest loop: Kafka records in, assignment events out, offsets committed last.

For every micro-batch (at most ``max_batch_size`` records or ``max_batch_wait_ms``):

1. validate; invalid records go to the dead-letter topic (acknowledged) with the reason;
2. embed the valid ones (off the event loop); when the model fails on the batch, each headline
   is tried alone and those it fails on alone are dead-lettered (poison messages);
3. upsert them into Milvus (idempotent: the headline id is the primary key); with Milvus
   Lite's search mirror, only make them searchable here (write-behind, below);
4. search each one's ``2k + 1`` nearest neighbours in Milvus;
5. assign each to the current snapshot (approximate predict; ``unassigned`` before
   the first clustering), or beside the arrivals since the snapshot, starting an
   emerging topic when a few close ones are still unplaced (:mod:`streamer.core.arrivals`);
6. publish the assignment events (and the ``created`` events of emerging topics, after
   persisting the id counter, so a restart never hands out the same id twice) and wait
   for acks=all;
7. commit the offsets of the whole batch, invalid records included (write-behind: once the
   batch is written to Milvus, after the batches before it; the next batch does not wait);
8. hand the arrivals and their neighbour lists to the re-clusterer's window.

Steps 1-2 of the next batches run while steps 3-8 of batch *n* do (:meth:`IngestPipeline.run`
says why and what keeps that safe); steps 3-8 run one batch at a time, in order.

A retriable failure (Milvus or Kafka away) repeats the failing step with
exponential backoff and marks the dependency unready; nothing is committed
until the batch went through, so a crash at any point loses nothing
(at-least-once, duplicate events carry the same event id).

Depends only on schema, the pure core and metrics; adapters are injected.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from streamer.core.arrivals import ArrivalAssigner, EmergingRule
from streamer.core.tracking import ClusterRegistry
from streamer.domain.errors import EmbeddingError
from streamer.domain.events import (
    AssignmentStatus,
)
from streamer.domain.headline import Headline, RawRecord, now_ms
from streamer.domain.ports import (
    ArrivalForwarder,
    ArrivalListener,
    Arrivals,
    Embedder,
    EventSink,
    HeadlineSource,
    PublishedArrivals,
    StagingStore,
    VectorStore,
)
from streamer.domain.validation import Rejection, RejectReason, parse_record
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.lag import report_lag
from streamer.service.leadership import with_epoch
from streamer.service.placement import ArrivalPlacement
from streamer.service.retry import Retrier, ShutdownRequested
from streamer.service.snapshots import STATE_ID_COUNTER_KEY, SnapshotHolder
from streamer.service.write_behind import WriteBehind

__all__ = ["IngestConfig", "IngestPipeline", ]

log = get_logger(__name__)




@dataclass(frozen=True)
class _Prepared:
    """A fetched batch, validated and embedded, waiting for its turn to be stored and published."""

    records: list[RawRecord]
    rejected: list[tuple[RawRecord, Rejection]]
    valid: list[tuple[RawRecord, Headline]]
    vectors: np.ndarray | None
    #: The source's rebalance generation when the batch was fetched.
    generation: int


@dataclass(frozen=True)
class IngestConfig:
    max_batch_size: int = 64
    max_batch_wait_ms: int = 50
    max_message_bytes: int = 65_536
    k: int = 15
    retry_initial_s: float = 0.5
    retry_max_s: float = 10.0
    lag_interval_s: float = 5.0
    batches_in_flight: int = 3
    emerging: EmergingRule = EmergingRule()
    state_topic: str = "streamer-state"
    #: With a :class:`~streamer.domain.ports.StagingStore`: publish once a batch is searchable, write
    #: it to Milvus and commit behind (see :meth:`IngestPipeline._finish`).
    write_behind: bool = True
    #: Records read whose Milvus write and commit are still queued before the loop waits for them.
    max_unstored: int = 1024














class IngestPipeline:
    """Consume, embed, store, assign, publish, commit: one micro-batch at a time."""

    def __init__(
        self,
        *,
        source: HeadlineSource,
        sink: EventSink,
        embedder: Embedder,
        store: VectorStore,
        runner: BlockingRunner,
        holder: SnapshotHolder,
        metrics: Metrics,
        health: Health,
        config: IngestConfig,
        listener: ArrivalListener | None = None,
        forwarder: ArrivalForwarder | None = None,
        registry: ClusterRegistry | None = None,
        may_mint: Callable[[], bool] = lambda: True,
        leader_epoch: Callable[[], int | None] = lambda: None,
        model_runner: BlockingRunner | None = None,
    ) -> None:
        """``model_runner`` (default: ``runner``) runs the embedder; give it ``batches_in_flight - 1``
        threads so that embeddings ahead never wait for, or hold up, the store calls on ``runner``.
        ``registry`` (with ``may_mint`` true: this instance leads the re-clusterer) lets arrivals
        start emerging topics; without it they only follow the snapshot and recent arrivals. The
        ``created`` events of those topics and the moves into them carry ``leader_epoch()``, as
        the leader's other events do, so that downstream can fence a deposed leader's.
        ``forwarder`` hands each batch to a re-clusterer in another process (before the commit).
        A store that can stage batches gets write-behind (``config.write_behind``)."""
        self._source = source
        self._sink = sink
        self._embedder = embedder
        self._store = store
        self._runner = runner
        self._model_runner = model_runner or runner
        self._holder = holder
        self._metrics = metrics
        self._health = health
        self._config = config
        self._listener = listener
        self._forwarder = forwarder
        self._registry = registry
        self._placement = ArrivalPlacement(holder, ArrivalAssigner(config.emerging, registry, may_mint), registry)
        self._leader_epoch = leader_epoch
        self.batches_done = 0
        self._write_behind: WriteBehind | None = None
        if config.write_behind and isinstance(store, StagingStore):
            self._write_behind = WriteBehind(
                staging=store, source=source, runner=runner, metrics=metrics, max_unstored=config.max_unstored
            )
            # A rebalance waits for the published batches to be written and committed, as it
            # waits for the batch in flight: their records are not handed to another member.
            source.on_revoke(self._write_behind.drain)

    async def run(self, stop: asyncio.Event) -> None:
        """Process batches until ``stop`` is set; the batch in flight is finished and committed first.

        Up to ``batches_in_flight`` batches are between fetch and commit: while batch *n* is
        stored, assigned, published and committed, the next ones are fetched, validated and
        embedded. The model is the ceiling (it keeps every core busy), and the store, broker
        round trips and commit are mostly waiting, so they hide behind the next embeddings
        instead of adding to them; two embeddings in flight also keep the model's threads
        busy across the tail of each one. Storing and publishing stay strictly in order, one
        batch at a time, and a batch is committed only after its own events were acknowledged
        and it was written to Milvus, so at-least-once is unchanged (with write-behind the
        write and the commit trail the events, in order; stopping waits for them). Batches
        embedded ahead are dropped, not committed, when stopping or when a rebalance happened
        since they were fetched (the consumer then rereads from the committed offsets, and
        those records come again).
        """
        retrier = Retrier(self._metrics, self._health, stop, self._config.retry_initial_s, self._config.retry_max_s)
        lag_task = asyncio.create_task(
            report_lag(self._source, self._metrics, self._health, stop, self._config.lag_interval_s), name="streamer-lag"
        )
        ready: asyncio.Queue[asyncio.Task[_Prepared]] = asyncio.Queue()
        slots = asyncio.Semaphore(self._config.batches_in_flight)
        feeder = asyncio.create_task(self._feed(retrier, stop, slots, ready), name="streamer-feed")
        try:
            while not stop.is_set():
                getter = asyncio.create_task(ready.get())
                await asyncio.wait({getter, feeder}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    await feeder  # raises what ended it (a fetch refused for good); returns when stopping
                    return
                prepared = await getter.result()  # its embedding: a model failure stops the service
                try:
                    async with self._source.batch_lock:
                        if prepared.generation != self._source.generation:
                            log.info("dropping a batch fetched before a rebalance; it is read again", records=len(prepared.records))
                            continue
                        await self._finish(prepared, retrier)
                finally:
                    slots.release()
            if self._write_behind is not None:
                await self._write_behind.drain()  # stopping: the published batches are written and committed
        except ShutdownRequested as exc:
            log.info("stopping with an uncommitted batch; it will be redelivered", stage=str(exc))
        finally:
            pending = [feeder, lag_task]
            while not ready.empty():
                pending.append(ready.get_nowait())
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self._write_behind is not None:
                await self._write_behind.settle()  # writes queued behind a failure end too

    async def _feed(
        self, retrier: Retrier, stop: asyncio.Event, slots: asyncio.Semaphore, ready: asyncio.Queue[asyncio.Task[_Prepared]]
    ) -> None:
        """Fetch batches in order and start preparing each, while a slot is free."""
        while not stop.is_set():
            await slots.acquire()
            try:
                records = await retrier.run(
                    "fetch",
                    "kafka",
                    lambda: self._source.fetch(self._config.max_batch_size, self._config.max_batch_wait_ms),
                )
            except ShutdownRequested:
                return
            # Read when the fetch returns, not before it: a rebalance that completed during the fetch
            # rewound the positions (the consumer discards what it fetched before), so these records
            # are the new assignment's, and dropping them would skip them for good.
            generation = self._source.generation
            if not records:
                slots.release()
                continue
            ready.put_nowait(asyncio.create_task(self._prepare(records, generation), name="streamer-prepare"))

    async def _prepare(self, records: list[RawRecord], generation: int) -> _Prepared:
        """Steps 1-2: validate and embed. Nothing leaves the process here, so dropping it is safe."""
        m = self._metrics
        m.batch_size.observe(len(records))
        for r in records:
            m.consumed.labels(r.topic).inc()
        with self._metrics.timed("validate"):
            arrived = now_ms()
            parsed = [(r, parse_record(r, max_bytes=self._config.max_message_bytes, ingested_at_ms=arrived)) for r in records]
        rejected = [(r, result) for r, result in parsed if isinstance(result, Rejection)]
        # The same id twice in one batch: the later message wins, as it would across batches.
        latest: dict[str, tuple[RawRecord, Headline]] = {}
        for record, result in parsed:
            if isinstance(result, Headline):
                latest[result.id] = (record, result)
        valid = list(latest.values())
        vectors = None
        if valid:
            with self._metrics.timed("embed"):
                valid, vectors, poisoned = await self._embed(valid)
            rejected.extend(poisoned)
            self._health.set("model", True)
        return _Prepared(records, rejected, valid, vectors, generation)

    async def _embed(
        self, valid: list[tuple[RawRecord, Headline]]
    ) -> tuple[list[tuple[RawRecord, Headline]], np.ndarray | None, list[tuple[RawRecord, Rejection]]]:
        """Embed the batch; the headlines kept, their vectors (None if none), and the poisoned ones.

        When the model fails on a batch, each headline is tried once alone: those that fail
        alone go to the dead-letter topic with the error, the rest go through. One poison
        message must neither stop the service nor crash-loop it at every redelivery. When every
        headline of a batch of two or more fails alone, the model is broken, not the messages:
        that raises and stops the service (nothing is committed; the batch is read again).
        """
        texts = [h.text for _, h in valid]
        try:
            return valid, await self._model_runner.run(self._embedder.encode, texts), []
        except Exception as exc:  # a model may raise anything on one odd input
            log.warning("embedding a batch failed; trying each headline alone", error=str(exc)[:300], headlines=len(texts))
            first_error = exc
        kept: list[tuple[RawRecord, Headline]] = []
        rows: list[np.ndarray] = []
        poisoned: list[tuple[RawRecord, Rejection]] = []
        for record, headline in valid:
            try:
                rows.append(await self._model_runner.run(self._embedder.encode, [headline.text]))
                kept.append((record, headline))
            except Exception as exc:
                message = f"the embedding model failed on this headline: {type(exc).__name__}: {exc}"
                poisoned.append((record, Rejection(RejectReason.EMBEDDING_FAILED, message[:1000])))
        if not kept and len(valid) > 1:
            raise EmbeddingError(f"the embedding model failed on every headline of a batch: {first_error}") from first_error
        return kept, (np.vstack(rows) if rows else None), poisoned

    async def _finish(self, prepared: _Prepared, retrier: Retrier) -> None:
        """Steps 1 (dead letters), 3-8: store, assign, publish, commit, in batch order."""
        m = self._metrics
        for record, rejection in prepared.rejected:
            await retrier.run(
                "produce", "kafka", lambda r=record, x=rejection: self._sink.dead_letter(r, x.message, x.reason.value)
            )
            m.dead_lettered.labels(rejection.reason.value).inc()
            log.info(
                "message dead-lettered",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                reason=rejection.reason.value,
                detail=rejection.message[:200],
            )
        if prepared.vectors is not None:  # None exactly when no record was valid
            await self._process_valid(prepared.valid, prepared.vectors, retrier)
        # 7. commit everything read, rejected records included
        next_offsets: dict[tuple[str, int], int] = {}
        for r in prepared.records:
            key = (r.topic, r.partition)
            next_offsets[key] = max(next_offsets.get(key, 0), r.offset + 1)
        if self._write_behind is not None:
            staged = [h for _, h in prepared.valid] if prepared.vectors is not None else []
            await self._write_behind.enqueue(staged, prepared.vectors, next_offsets, retrier, len(prepared.records))
        else:
            with self._metrics.timed("commit"):
                await retrier.run("commit", "kafka", lambda: self._source.commit(next_offsets))
        self.batches_done += 1

    async def _process_valid(self, valid: list[tuple[RawRecord, Headline]], vectors: np.ndarray, retrier: Retrier) -> None:
        m = self._metrics
        headlines = [h for _, h in valid]
        # 3. upsert (write-behind: make the batch searchable now; it is written before its commit)
        if self._write_behind is not None:
            with self._metrics.timed("mirror"):
                await self._runner.run(self._write_behind.staging.stage, headlines, vectors)
        else:
            with self._metrics.timed("upsert"):
                await retrier.run("upsert", "milvus", lambda: self._runner.run(self._store.upsert, headlines, vectors))
        # 4. neighbours
        limit = 2 * self._config.k + 1
        with self._metrics.timed("search"):
            found, sims = await retrier.run(
                "search", "milvus", lambda: self._runner.run(self._store.search, vectors, limit)
            )
        # 5. assign
        with self._metrics.timed("assign"):
            epoch = self._leader_epoch()  # read with no await before the placement that may mint under it
            events, moved, started = self._placement.place(headlines, found, sims)
            if epoch is not None:
                moved, started = with_epoch(moved, epoch), with_epoch(started, epoch)
        # 6. publish
        with self._metrics.timed("produce"):
            if started and self._registry is not None:
                # The counter and the topics minted since the last run, before their events: a crash
                # before the commit brings them back, so the redelivered arrivals keep these ids.
                minted = json.dumps(self._registry.emerging_state()).encode()
                await retrier.run(
                    "state", "kafka", lambda: self._sink.send_state(self._config.state_topic, STATE_ID_COUNTER_KEY, minted)
                )
                await retrier.run("produce", "kafka", lambda: self._sink.send_cluster_events(started))
                for _ in started:
                    m.lifecycle.labels("created").inc()
            await retrier.run("produce", "kafka", lambda: self._sink.send_assignments([*events, *moved]))
        acked = time.time()
        for (record, _), event in zip(valid, events, strict=True):
            m.processed.labels(record.topic).inc()
            m.assignments.labels(event.reason.value, event.status.value).inc()
            if record.timestamp_ms > 0:
                m.end_to_end_seconds.observe(max(0.0, acked - record.timestamp_ms / 1000))
        for event in moved:
            m.assignments.labels(event.reason.value, event.status.value).inc()
        self._holder.record_published((*events, *moved))
        # 8. the window learns the arrivals (the re-clusterer runs on its own schedule)
        unplaced = sum(1 for e in events if e.status != AssignmentStatus.ASSIGNED)
        arrivals = Arrivals(headlines, vectors, found, sims, unplaced)
        if self._listener is not None:
            self._listener.on_arrivals(arrivals)
        forwarder = self._forwarder
        if forwarder is not None:
            batch = PublishedArrivals(arrivals, [self._holder.published(h.id) for h in headlines])
            with self._metrics.timed("forward"):
                await retrier.run("produce", "kafka", lambda: forwarder.forward(batch))

