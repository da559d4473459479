"""IngestPipeline with batches in flight: commits in order, after their own events, never for a
batch fetched before a rebalance or embedded ahead of a stop.

The adapters are small doubles so that the interleavings can be forced (a slow model, a
rebalance between fetch and finish); the same loop against the real broker, Milvus Lite and
model is tests/integration/test_service.py and test_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator

import numpy as np
import pytest

from streamer.domain.errors import EmbeddingError
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.domain.headline import Headline, RawRecord
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.ingest import IngestConfig, IngestPipeline
from streamer.service.snapshots import SnapshotHolder

DIM = 8


def record(partition: int, offset: int) -> RawRecord:
    hid = f"p{partition}-{offset}"
    return RawRecord("in", partition, offset, hid.encode(), json.dumps({"id": hid, "title": f"headline {hid}"}).encode())


class ScriptedSource:
    """Hands out the scripted batches; a batch may come with a rebalance right after it is fetched."""

    def __init__(
        self,
        batches: list[list[RawRecord]],
        *,
        rebalance_after: frozenset[int] = frozenset(),
        rebalance_during: frozenset[int] = frozenset(),
    ) -> None:
        self.all_batches = list(batches)
        self.batches = list(batches)
        self.rebalance_after = rebalance_after
        #: Fetches during which a rebalance completes: the consumer rewound, and returns records
        #: read from the committed offsets (what aiokafka does: it discards what it had fetched).
        self.rebalance_during = rebalance_during
        self.batch_lock = asyncio.Lock()
        self.generation = 0
        self.fetches = 0
        self.commits: list[tuple[dict[tuple[str, int], int], set[str]]] = []
        self.sent: set[str] = set()  # shared with the sink: what was acknowledged so far
        self.written: set[str] = set()  # shared with a staging store: what Milvus holds so far
        self.written_at_commit: list[set[str]] = []
        self.before_revoke: Callable[[], Awaitable[None]] | None = None  # set by a write-behind pipeline

    def on_revoke(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.before_revoke = hook

    async def fetch(self, max_records: int, timeout_ms: int) -> list[RawRecord]:
        if not self.batches:
            await asyncio.sleep(timeout_ms / 1000)
            return []
        index, self.fetches = self.fetches, self.fetches + 1
        if index in self.rebalance_during:
            await self._rebalance()
        batch = self.batches.pop(0)
        if index in self.rebalance_after:
            asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(self._rebalance()))
        return batch

    async def _rebalance(self) -> None:
        """What the real listener does: wait for the batch being finished, then the consumer
        rereads every partition from its committed offset."""
        async with self.batch_lock:
            if self.before_revoke is not None:
                await self.before_revoke()
            self.generation += 1
            committed = self.commits[-1][0].get(("in", 0), 0) if self.commits else 0
            self.batches = [b for b in self.all_batches if b[0].offset >= committed]

    async def commit(self, next_offsets: dict[tuple[str, int], int]) -> None:
        self.commits.append((dict(next_offsets), set(self.sent)))
        self.written_at_commit.append(set(self.written))

    async def lag(self) -> dict[tuple[str, int], int]:
        return {}

    async def probe(self) -> None:
        return None


class RecordingSink:
    def __init__(self, source: ScriptedSource) -> None:
        self.source = source
        self.assignments: list[str] = []

    async def send_assignments(self, events: list[AssignmentEvent]) -> None:
        await asyncio.sleep(0.005)  # an ack round trip
        self.assignments.extend(e.headline_id for e in events)
        self.source.sent.update(e.headline_id for e in events)

    async def send_cluster_events(self, events: list[ClusterEvent]) -> None:
        return None

    async def dead_letter(self, record: RawRecord, reason: str, error_type: str) -> None:
        return None

    async def send_state(self, topic: str, key: bytes, value: bytes | None) -> None:
        return None


class SlowModel:
    """Blocks like the real model does; the first batch is the slowest, so later ones overtake it."""

    dim = DIM

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        self.calls += 1
        time.sleep(0.08 if self.calls == 1 else 0.01)
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class MemoryStore:
    def __init__(self) -> None:
        self.ids: list[str] = []

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        self.ids.extend(h.id for h in headlines)

    def search(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        found = [self.ids[-limit:] for _ in range(len(vectors))]
        return found, np.ones((len(vectors), len(found[0]) if found else 0), dtype=np.float32)


class StagingStore(MemoryStore):
    """Milvus Lite with its search mirror: searchable when staged, durable when written.

    ``hold`` blocks the write of the batch holding that headline id until ``release`` is set,
    as a Lite flush blocks its writers; ``fail`` makes the write of that batch fail for good.
    """

    def __init__(self, source: ScriptedSource, *, hold: str | None = None, fail: str | None = None) -> None:
        super().__init__()
        self.source = source
        self.hold, self.fail = hold, fail
        self.release = threading.Event()

    def stage(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        self.ids.extend(h.id for h in headlines)

    def write_staged(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        ids = {h.id for h in headlines}
        if self.fail in ids:
            raise ValueError("schema mismatch")  # not retriable
        if self.hold in ids:
            assert self.release.wait(10)
        self.source.written.update(ids)


async def run_until(pipeline: IngestPipeline, done: Callable[[], bool], stop: asyncio.Event, timeout_s: float = 10) -> None:
    task = asyncio.create_task(pipeline.run(stop))
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)


async def release_and_stop(
    store: StagingStore, source: ScriptedSource, commits: int, stop: asyncio.Event, task: asyncio.Task[None]
) -> None:
    """Let the held write go, wait for ``commits`` commits, then stop the loop."""
    store.release.set()
    for _ in range(500):
        if len(source.commits) == commits:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)


def make_pipeline(
    source: ScriptedSource,
    sink: RecordingSink,
    runner: BlockingRunner,
    in_flight: int,
    store: MemoryStore | None = None,
    max_unstored: int = 1024,
) -> IngestPipeline:
    return IngestPipeline(
        source=source,
        sink=sink,
        embedder=SlowModel(),
        store=store if store is not None else MemoryStore(),
        runner=runner,
        model_runner=runner,
        holder=SnapshotHolder(),
        metrics=Metrics(),
        health=Health(),
        config=IngestConfig(
            max_batch_wait_ms=5, k=2, batches_in_flight=in_flight, lag_interval_s=60, max_unstored=max_unstored
        ),
    )


@pytest.fixture
def runner() -> Iterator[BlockingRunner]:
    pool = BlockingRunner(4)
    yield pool
    pool.shutdown()


@pytest.mark.parametrize("staging", [False, True], ids=["write-first", "write-behind"])
@pytest.mark.parametrize("in_flight", [1, 3])
async def test_commits_follow_batch_order_and_their_own_events(runner: BlockingRunner, in_flight: int, staging: bool) -> None:
    """Each commit comes after every event of its batch was acknowledged (and, write-behind, after
    the batch was written), and offsets only grow."""
    batches = [[record(b % 2, b // 2 * 3 + i) for i in range(3)] for b in range(8)]
    source = ScriptedSource(batches)
    sink = RecordingSink(source)
    pipeline = make_pipeline(source, sink, runner, in_flight, StagingStore(source) if staging else None)
    await run_until(pipeline, lambda: len(source.commits) == len(batches), asyncio.Event())

    assert len(source.commits) == len(batches)
    last: dict[tuple[str, int], int] = {}
    for batch, (offsets, acknowledged) in zip(batches, source.commits, strict=True):
        assert {f"p{r.partition}-{r.offset}" for r in batch} <= acknowledged
        for key, offset in offsets.items():
            assert offset > last.get(key, -1)
            last[key] = offset
    assert sink.assignments == [f"p{r.partition}-{r.offset}" for batch in batches for r in batch]
    if staging:
        for batch, written in zip(batches, source.written_at_commit, strict=True):
            assert {f"p{r.partition}-{r.offset}" for r in batch} <= written


@pytest.mark.parametrize("staging", [False, True], ids=["write-first", "write-behind"])
async def test_a_batch_fetched_before_a_rebalance_is_read_again_not_committed(runner: BlockingRunner, staging: bool) -> None:
    """The batch prepared across a rebalance is dropped; its redelivery is what gets committed, once.
    Write-behind: the rebalance first waits for the published batches' writes and commits."""
    batches = [[record(0, b * 2 + i) for i in range(2)] for b in range(4)]
    source = ScriptedSource(batches, rebalance_after=frozenset({1}))
    sink = RecordingSink(source)
    pipeline = make_pipeline(source, sink, runner, 3, StagingStore(source) if staging else None)
    await run_until(pipeline, lambda: len(source.commits) == len(batches), asyncio.Event())

    expected = [f"p0-{r.offset}" for batch in batches for r in batch]
    assert source.fetches > len(batches)  # something was read again
    assert sink.assignments == expected  # every batch once, in order: none from before the rebalance
    assert [offsets[("in", 0)] for offsets, _ in source.commits] == [2, 4, 6, 8]


async def test_records_a_fetch_returns_after_a_rebalance_are_processed_not_dropped(runner: BlockingRunner) -> None:
    """A rebalance completing while a fetch waits rewinds the consumer; what the fetch then returns
    belongs to the new assignment and must be processed (dropping it skipped it for good: the
    position had moved past it; found when an ingest replica was killed in bench/topology.py)."""
    batches = [[record(0, b * 2 + i) for i in range(2)] for b in range(4)]
    source = ScriptedSource(batches, rebalance_during=frozenset({2}))
    sink = RecordingSink(source)
    pipeline = make_pipeline(source, sink, runner, 1)
    await run_until(pipeline, lambda: len(source.commits) == len(batches), asyncio.Event())

    assert sink.assignments == [f"p0-{r.offset}" for batch in batches for r in batch]
    assert [offsets[("in", 0)] for offsets, _ in source.commits] == [2, 4, 6, 8]


async def test_stopping_drops_the_batches_embedded_ahead(runner: BlockingRunner) -> None:
    """Stop after the first commit: nothing later is committed without its events, and the rest waits."""
    batches = [[record(0, b * 2 + i) for i in range(2)] for b in range(6)]
    source = ScriptedSource(batches)
    sink = RecordingSink(source)
    pipeline = make_pipeline(source, sink, runner, 3)
    await run_until(pipeline, lambda: len(source.commits) >= 1, asyncio.Event())

    assert 1 <= len(source.commits) < len(batches)
    for offsets, acknowledged in source.commits:
        assert {f"p0-{o}" for o in range(offsets[("in", 0)])} <= acknowledged
    committed = source.commits[-1][0][("in", 0)]
    assert sink.assignments == [f"p0-{o}" for o in range(committed)]  # no event past the last commit


async def test_write_behind_publishes_while_an_earlier_write_is_blocked(runner: BlockingRunner) -> None:
    """A Lite flush blocks the first batch's write: later batches' events still go out, and no
    offset is committed until the blocked write is done; then every commit follows in order."""
    batches = [[record(0, b * 2 + i) for i in range(2)] for b in range(5)]
    source = ScriptedSource(batches)
    sink = RecordingSink(source)
    store = StagingStore(source, hold="p0-0")
    pipeline = make_pipeline(source, sink, runner, 3, store)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    everything = [f"p0-{o}" for o in range(10)]
    for _ in range(500):
        if sink.assignments == everything:
            break
        await asyncio.sleep(0.01)
    assert sink.assignments == everything  # all published while the first write is held
    assert source.commits == [] and source.written == set()
    await release_and_stop(store, source, len(batches), stop, task)
    assert [offsets[("in", 0)] for offsets, _ in source.commits] == [2, 4, 6, 8, 10]
    for b, written in enumerate(source.written_at_commit):
        assert {f"p0-{o}" for o in range(2 * b + 2)} <= written


async def test_write_behind_bounds_queued_commits_of_dead_letter_only_batches(runner: BlockingRunner) -> None:
    """While a write is blocked (a flush, an outage), batches of nothing but malformed messages
    still queue a commit each; the bound counts their records, so fetching stops at it instead
    of queueing without end, and everything is committed in order once the write is released."""
    bad = [[RawRecord("in", 0, 2 + b * 2 + i, None, b"not json") for i in range(2)] for b in range(40)]
    batches = [[record(0, 0), record(0, 1)], *bad]
    source = ScriptedSource(batches)
    sink = RecordingSink(source)
    store = StagingStore(source, hold="p0-0")
    pipeline = make_pipeline(source, sink, runner, 3, store, max_unstored=8)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await asyncio.sleep(0.5)  # ample time to read all 41 batches if nothing held the loop back
    held_at = source.fetches
    # the held batch and 3 dead-letter batches fill the bound (8 records); one more waits to be
    # queued, and the slots allow two more prepared behind it
    assert held_at <= 1 + 3 + 1 + 2
    assert source.commits == []
    await release_and_stop(store, source, len(batches), stop, task)
    assert [offsets[("in", 0)] for offsets, _ in source.commits] == [2 + 2 * b for b in range(len(batches))]


async def test_write_behind_commits_nothing_past_a_failed_write(runner: BlockingRunner) -> None:
    """The second batch's write fails for good: the first batch is committed, nothing after it,
    and the loop stops with the error (the records from the second batch on come again)."""
    batches = [[record(0, b * 2 + i) for i in range(2)] for b in range(4)]
    source = ScriptedSource(batches)
    sink = RecordingSink(source)
    pipeline = make_pipeline(source, sink, runner, 3, StagingStore(source, fail="p0-2"))
    with pytest.raises(ValueError, match="schema mismatch"):
        await asyncio.wait_for(pipeline.run(asyncio.Event()), 10)
    assert [offsets[("in", 0)] for offsets, _ in source.commits] == [2]
    assert "p0-2" not in source.written and "p0-4" not in source.written


class PoisonModel(SlowModel):
    """Fails on any batch holding a headline whose title contains ``poison``, as a model may on one odd input."""

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        if any("poison" in t for t in texts):
            raise RuntimeError("index out of range in self")
        return super().encode(texts)


class DeadLetters(RecordingSink):
    def __init__(self, source: ScriptedSource) -> None:
        super().__init__(source)
        self.dead: list[tuple[int, str]] = []

    async def dead_letter(self, record: RawRecord, reason: str, error_type: str) -> None:
        self.dead.append((record.offset, error_type))


def poison_record(offset: int) -> RawRecord:
    return RawRecord("in", 0, offset, b"x", json.dumps({"id": f"x{offset}", "title": "a poison headline"}).encode())


async def test_a_message_the_model_fails_on_is_dead_lettered_and_its_batch_goes_through(runner: BlockingRunner) -> None:
    """The poison message alone is dead-lettered (embedding_failed); the others are assigned and all are committed."""
    batch = [record(0, 0), poison_record(1), record(0, 2)]
    source = ScriptedSource([batch])
    sink = DeadLetters(source)
    pipeline = make_pipeline(source, sink, runner, 1)
    pipeline._embedder = PoisonModel()
    stop = asyncio.Event()
    await run_until(pipeline, lambda: bool(source.commits), stop)
    assert sink.dead == [(1, "embedding_failed")]
    assert sorted(sink.assignments) == ["p0-0", "p0-2"]
    assert source.commits[-1][0] == {("in", 0): 3}


async def test_a_model_that_fails_on_every_headline_stops_the_service_without_committing(runner: BlockingRunner) -> None:
    """Every headline failing alone means a broken model, not poison: the loop raises and commits nothing."""
    batch = [poison_record(0), poison_record(1)]
    source = ScriptedSource([batch])
    sink = DeadLetters(source)
    pipeline = make_pipeline(source, sink, runner, 1)
    pipeline._embedder = PoisonModel()
    with pytest.raises(EmbeddingError):
        await asyncio.wait_for(pipeline.run(asyncio.Event()), 10)
    assert source.commits == [] and sink.dead == []
