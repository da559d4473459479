"""Reclusterer.run_once on its own: a timer tick with nothing new re-clusters nothing.

The store and sink are small doubles (what a run reads and writes is recorded); the same
re-clusterer against the real broker and Milvus Lite runs in tests/integration/test_service.py.
"""

from __future__ import annotations

import asyncio

import numpy as np
from prometheus_client import CollectorRegistry

from streamer.concurrency import BlockingRunner
from streamer.metrics import Health, Metrics
from streamer.pipeline import Arrivals, Retrier, SnapshotHolder
from streamer.recluster import ReclusterConfig, Reclusterer
from streamer.schema import Headline
from streamer.tracking import ClusterRegistry
from tests.unit.helpers import blobs


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
        config = ReclusterConfig(k=5, min_points=20)
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
