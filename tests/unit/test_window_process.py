"""The window in a child process (streamer.adapters.window_process.ProcessWindowCompute).

A real spawned process each time: the same runs as the in-process window, at nice +10, and a
child that dies (SIGKILL) costs the window, not the service: the next run reads it back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamer.adapters.window_process import ProcessWindowCompute
from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ArrivalRows, ReclusterConfig, WindowCompute, WindowLost
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.recluster import Reclusterer
from streamer.service.retry import Retrier
from streamer.service.snapshots import SnapshotHolder
from tests.unit.helpers import SMALL_DATA_PARAMS, blobs
from tests.unit.test_recluster_schedule import RecordingSink, arrivals

CONFIG = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20, window_s=100.0)  # event times 1 s apart: 100 stay
DIM = 24
NOTHING = ([], np.zeros((0, DIM), np.float32), [])


def rows(vectors: np.ndarray, first: int) -> ArrivalRows:
    return ArrivalRows.from_arrivals(arrivals(vectors, first, CONFIG.k))


@pytest.fixture
def child() -> ProcessWindowCompute:
    window = ProcessWindowCompute(CONFIG, DIM)
    window.start()
    yield window
    window.close()


def test_the_child_computes_what_the_in_process_window_computes(child: ProcessWindowCompute) -> None:
    vectors, _ = blobs(n_clusters=3, per_cluster=50)
    vectors = vectors[np.random.default_rng(0).permutation(len(vectors))]  # every story in every run
    here = WindowCompute(CONFIG, DIM)
    for run_id, (start, stop) in enumerate([(0, 40), (40, 90), (90, 150)], start=1):
        batch = [rows(vectors[start:stop], start)]
        mine, theirs = here.compute(run_id, batch, NOTHING), child.compute(run_id, batch, NOTHING)
        assert theirs.expired == mine.expired
        assert mine.computed is not None and theirs.computed is not None
        assert theirs.computed.ids == mine.computed.ids
        np.testing.assert_array_equal(theirs.computed.clustering.labels, mine.computed.clustering.labels)
        np.testing.assert_array_equal(theirs.computed.snapshot.core, mine.computed.snapshot.core)
        assert [s.keywords for s in theirs.computed.summaries] == [s.keywords for s in mine.computed.summaries]
        assert theirs.computed.clustering.n_clusters >= 2
        # membership is mirrored in the parent: what went in, less what expired
        assert len(child) == len(here) and all(hid in child for hid in here.window.ids)
    assert mine.expired and "h0" not in child  # the third run's newest event time moved the window


def test_the_child_runs_at_lower_priority_and_never_imports_the_model(child: ProcessWindowCompute) -> None:
    assert child.pid is not None and child.pid != os.getpid()
    # every thread, including the pools OpenBLAS and OpenMP start while numpy is imported
    threads = os.listdir(f"/proc/{child.pid}/task")
    assert len(threads) > 1
    for tid in threads:
        with open(f"/proc/{child.pid}/task/{tid}/stat") as stat:
            assert int(stat.read().rsplit(")", 1)[1].split()[16]) >= 10, f"thread {tid}"
    with open(f"/proc/{child.pid}/maps") as maps:  # the libraries mapped into the child
        assert "libtorch" not in maps.read()


def test_a_killed_child_loses_the_window_and_the_next_run_reads_it_back_from_the_store() -> None:
    class Store:
        """Milvus holding every headline ingested so far (the window's source after a loss)."""

        def __init__(self) -> None:
            self.rows: dict[str, tuple[np.ndarray, str, int]] = {}
            self.since: list[int] = []

        def ids_since(self, since_ms: int) -> list[str]:
            self.since.append(since_ms)
            return list(self.rows)

        def fetch_rows(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict[str, object]]]:
            got = [self.rows[i] for i in ids]
            return ids, np.stack([g[0] for g in got]), [{"title": g[1], "event_time": g[2]} for g in got]

        def delete(self, ids: list[str]) -> None:
            for hid in ids:
                self.rows.pop(hid, None)

    async def scenario() -> None:
        metrics = Metrics(CollectorRegistry())
        retrier = Retrier(metrics, Health(), asyncio.Event(), 0.01, 0.1)
        runner = BlockingRunner(1)
        store = Store()
        config = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20, window_s=1e9, catch_up_every_run=False)
        window = ProcessWindowCompute(config, DIM)
        reclusterer = Reclusterer(store=store, sink=RecordingSink(), runner=runner, holder=SnapshotHolder(),  # type: ignore[arg-type]
                                  registry=ClusterRegistry(), metrics=metrics, config=config, dim=DIM, window=window)
        vectors, _ = blobs(n_clusters=3, per_cluster=40)

        def ingest(start: int, stop: int) -> None:
            batch = arrivals(vectors[start:stop], start, config.k)
            for h, v in zip(batch.headlines, batch.vectors, strict=True):
                store.rows[h.id] = (v, h.title, h.event_time_ms)
            reclusterer.on_arrivals(batch)

        try:
            ingest(0, 60)
            first = await reclusterer.run_once(retrier)
            assert first is not None and first.window == 60 and store.since == [0]

            assert window.pid is not None
            os.kill(window.pid, signal.SIGKILL)
            ingest(60, 90)
            with pytest.raises(WindowLost):
                await reclusterer.run_once(retrier)
            assert len(window) == 0

            ingest(90, 120)
            report = await reclusterer.run_once(retrier)
            # a fresh child, filled from the store (all 90 before it) plus the 30 new arrivals
            assert store.since[-1] == 0
            assert report is not None and report.window == 120 and len(window) == 120
            assert report.run_id == first.run_id + 1  # the lost run never got an id
        finally:
            window.close()
            runner.shutdown()

    asyncio.run(scenario())


def test_a_run_that_fails_in_the_child_drops_its_window_and_the_next_starts_afresh(child: ProcessWindowCompute) -> None:
    vectors, _ = blobs(n_clusters=3, per_cluster=30)
    assert child.compute(1, [rows(vectors[:40], 0)], NOTHING).computed is not None
    first_pid = child.pid
    wrong = ArrivalRows(["x1"], ["bad"], [41_000], np.ones((1, DIM + 3), np.float32))  # not the window's dim
    with pytest.raises(WindowLost, match="failed in the window process"):
        child.compute(2, [wrong], NOTHING)
    assert len(child) == 0 and "h0" not in child  # nothing the parent would trust
    change = child.compute(2, [rows(vectors[40:], 40)], NOTHING)
    assert child.pid != first_pid
    assert change.computed is not None and change.computed.ids[0] == "h40"  # a fresh window


def test_close_during_a_run_stops_the_child_without_waiting_for_the_run() -> None:
    vectors, _ = blobs(n_clusters=3, per_cluster=40)
    window = ProcessWindowCompute(CONFIG, DIM)
    window.start()
    pid = window.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a run that will not finish by itself
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            window.compute(1, [rows(vectors, 0)], NOTHING)
        except BaseException as exc:  # noqa: BLE001 - the thread reports whatever it got
            outcome.append(exc)

    caller = threading.Thread(target=run)
    caller.start()
    time.sleep(0.3)  # the request is out; the caller waits for the reply
    # Continued just after close() sent SIGTERM: it dies instead of finishing the run.
    threading.Timer(0.5, os.kill, (pid, signal.SIGCONT)).start()
    window.close()
    caller.join(10)
    assert not caller.is_alive()
    assert outcome and isinstance(outcome[0], WindowLost)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_run_past_its_timeout_loses_the_window_and_a_fresh_child_replaces_the_hung_one() -> None:
    """A child that does not answer in time is killed (WindowLost); the next start is a new process."""
    window = ProcessWindowCompute(CONFIG, DIM, run_timeout_s=0.001)
    try:
        window.start()
        hung = window.pid
        vectors, _ = blobs(n_clusters=3, per_cluster=50)
        with pytest.raises(WindowLost, match="timed out"):
            window.compute(1, [rows(vectors, 0)], NOTHING)
        assert window.pid is None and len(window) == 0
        window.start()
        assert window.pid is not None and window.pid != hung
    finally:
        window.close()


def test_a_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match="run_timeout_s"):
        ProcessWindowCompute(CONFIG, DIM, run_timeout_s=0)
