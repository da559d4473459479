"""Reclusterer.run_once on its own: a timer tick with nothing new re-clusters nothing.

The store and sink are small doubles (what a run reads and writes is recorded); the same
re-clusterer against the real broker and Milvus Lite runs in tests/integration/test_service.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client import CollectorRegistry

from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ReclusterConfig
from streamer.domain.headline import Headline
from streamer.domain.ports import Arrivals
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.recluster import Reclusterer
from streamer.service.retry import Retrier
from streamer.service.snapshots import SnapshotHolder
from tests.unit.helpers import SMALL_DATA_PARAMS, blobs


class QuietStore:
    """Milvus as seen by a single instance: nothing it has not ingested itself."""

    def ids_since(self, since_ms: int) -> list[str]:
        return []

    def fetch_rows(self, ids: list[str]) -> object:
        raise AssertionError("nothing to catch up")

    def delete(self, ids: list[str]) -> None:
        return None


class RecordingSink:
    def __init__(self) -> None:
        self.cluster_events: list[object] = []
        self.assignments: list[object] = []
        self.states = 0

    async def send_cluster_events(self, events: list[object]) -> None:
        self.cluster_events.extend(events)

    async def send_assignments(self, events: list[object]) -> None:
        self.assignments.extend(events)

    async def send_state(self, topic: str, key: bytes, value: bytes) -> None:
        self.states += 1


def arrivals(vectors: np.ndarray, first: int, k: int) -> Arrivals:
    heads = [Headline(id=f"h{first + i}", title=f"headline {first + i}", published_at_ms=1_000 * (first + i))
             for i in range(len(vectors))]
    sims = vectors @ vectors.T
    order = np.argsort(-sims, axis=1)[:, : k + 1]
    ids = [[f"h{first + j}" for j in row] for row in order]
    return Arrivals(heads, vectors, ids, np.take_along_axis(sims, order, 1).astype(np.float32))


def test_a_tick_with_nothing_new_is_skipped_and_the_next_arrival_runs_again() -> None:
    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        stop = asyncio.Event()
        retrier = Retrier(metrics, Health(), stop, 0.01, 0.1)
        runner = BlockingRunner(1)
        sink = RecordingSink()
        holder = SnapshotHolder()
        config = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20)
        reclusterer = Reclusterer(store=QuietStore(), sink=sink, runner=runner, holder=holder,  # type: ignore[arg-type]
                                  registry=ClusterRegistry(), metrics=metrics, config=config, dim=24)
        vectors, _ = blobs(n_clusters=3, per_cluster=30)
        try:
            reclusterer.on_arrivals(arrivals(vectors[:80], 0, config.k))
            first = await reclusterer.run_once(retrier)
            assert first is not None and first.clusters >= 2
            snapshot, events, states = holder.current, len(sink.cluster_events), sink.states

            assert await reclusterer.run_once(retrier) is None  # the timer fired on a quiet stream
            assert holder.current is snapshot  # nothing swapped, published or persisted
            assert (len(sink.cluster_events), sink.states) == (events, states)
            assert reclusterer.registry.run_id == first.run_id
            assert metrics.recluster_runs.labels("skipped")._value.get() == 1

            reclusterer.on_arrivals(arrivals(vectors[80:], 80, config.k))
            second = await reclusterer.run_once(retrier)
            assert second is not None and second.run_id == first.run_id + 1
            assert holder.current is not snapshot
        finally:
            runner.shutdown()

    asyncio.run(scenario())


def test_arrivals_during_a_run_count_toward_the_next_one_instead_of_triggering_it_at_once() -> None:
    """every_n arrivals trigger a run; more arrive while it computes (in the service: the ingest
    loop keeps going). They are the next run's, and they alone do not reach every_n: no trigger."""

    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        retrier = Retrier(metrics, Health(), asyncio.Event(), 0.01, 0.1)
        runner = BlockingRunner(1)
        config = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20, every_n=60)
        reclusterer = Reclusterer(store=QuietStore(), sink=RecordingSink(), runner=runner, holder=SnapshotHolder(),  # type: ignore[arg-type]
                                  registry=ClusterRegistry(), metrics=metrics, config=config, dim=24)
        vectors, _ = blobs(n_clusters=3, per_cluster=30)
        extra, _ = blobs(n_clusters=3, per_cluster=30, seed=1)
        extra = extra[:20]
        loop = asyncio.get_running_loop()
        compute = reclusterer._compute

        def compute_while_arrivals_come(*args: object) -> object:
            # From the worker thread, as the ingest loop would: 20 more arrivals mid-run.
            asyncio.run_coroutine_threadsafe(arrive(arrivals(extra, 90, config.k)), loop).result(10)
            return compute(*args)  # type: ignore[arg-type]

        async def arrive(batch: Arrivals) -> None:
            reclusterer.on_arrivals(batch)

        try:
            reclusterer.on_arrivals(arrivals(vectors[:30], 0, config.k))  # the first snapshot
            assert await reclusterer.run_once(retrier) is not None
            reclusterer._compute = compute_while_arrivals_come  # type: ignore[method-assign]
            reclusterer.on_arrivals(arrivals(vectors[30:90], 30, config.k))
            assert reclusterer._trigger.is_set()
            assert await reclusterer.run_once(retrier) is not None
            assert not reclusterer._trigger.is_set()  # 20 of 60: not due yet
            assert reclusterer._arrivals_since_run == 20
            reclusterer._compute = compute  # type: ignore[method-assign]
            report = await reclusterer.run_once(retrier)  # the timer's run takes the 20
            assert report is not None and report.window == 110
        finally:
            runner.shutdown()

    asyncio.run(scenario())


def test_a_follower_keeps_at_most_a_window_of_arrivals() -> None:
    """Not leading, the buffer keeps the newest ``max_window_size`` arrivals and no more."""

    async def scenario() -> list[str]:
        metrics = Metrics(CollectorRegistry())
        stop = asyncio.Event()
        runner = BlockingRunner(1)
        config = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20, max_window_size=30, interval_s=0.05)
        vectors, _ = blobs(n_clusters=2, per_cluster=40)
        reclusterer = Reclusterer(store=QuietStore(), sink=RecordingSink(), runner=runner, holder=SnapshotHolder(),  # type: ignore[arg-type]
                                  registry=ClusterRegistry(), metrics=metrics, config=config, dim=vectors.shape[1])
        for first in range(0, 80, 10):
            reclusterer.on_arrivals(arrivals(vectors[first:first + 10], first, config.k))
        task = asyncio.create_task(reclusterer.run(stop, Retrier(metrics, Health(), stop, 0.01, 0.1), lambda: False))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)
        runner.shutdown()
        return [h.id for a in reclusterer._pending for h in a.headlines]

    kept = asyncio.run(scenario())
    assert len(kept) == 30 and kept[-1] == "h79"
