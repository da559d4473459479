"""``streamer run``: the composition root of the streaming service.

Builds the adapters, the ingest loop and the re-clusterer for one role (:data:`ROLES` says
which parts a role runs) and runs them until SIGTERM/SIGINT or ``stop``. Start-up checks each
dependency once and fails fast with a clear error; once running, outages are retried. Every
part started is registered on one :class:`contextlib.AsyncExitStack`, so teardown stops exactly
what was started, in reverse order, whatever failed.

Roles:
- ``all`` (default): ingest, plus the re-clusterer while this instance holds the re-clusterer
  leadership (a Kafka group on the state topic); followers take the leader's snapshots from
  the state topic.
- ``ingest``: ingest only (follows snapshots).
- ``recluster``: the re-clusterer only; its window catches up from Milvus.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import signal
from collections.abc import Coroutine
from typing import Any

from streamer.adapters.embedding import FlagEmbedder
from streamer.adapters.kafka.arrivals import KafkaArrivalForwarder, follow_arrivals
from streamer.adapters.kafka.client import ensure_topics
from streamer.adapters.kafka.election import LeaderElection
from streamer.adapters.kafka.sink import AiokafkaSink
from streamer.adapters.kafka.source import AiokafkaSource
from streamer.adapters.kafka.state import STATE_MAX_BYTES, follow_state, read_state
from streamer.adapters.milvus.mirror import MirroredStore
from streamer.adapters.milvus.recent import RecentOverlayStore
from streamer.adapters.milvus.store import MilvusStore
from streamer.adapters.window_process import ProcessWindowCompute
from streamer.app.http import HealthServer
from streamer.app.roles import (
    ROLES,
    Role,
    RoleParts,
    check_streaming_settings,
    ingest_config,
    recluster_config,
)
from streamer.config.settings import Settings
from streamer.core.arrivals import ArrivalAssigner
from streamer.core.tracking import ClusterRegistry
from streamer.domain.errors import StreamerError
from streamer.domain.ports import VectorStore
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.ingest import IngestPipeline
from streamer.service.leadership import LEADER_KEY, Leadership, decode_claim
from streamer.service.placement import ArrivalPlacement
from streamer.service.recluster import Reclusterer
from streamer.service.replica_arrivals import ReplicaArrivals
from streamer.service.retry import Retrier
from streamer.service.snapshots import (
    STATE_SNAPSHOT_KEY,
    SnapshotHolder,
    decode_state,
    snapshot_from_state,
)

__all__ = ["run_service", "freeze_startup_heap"]

log = get_logger(__name__)

_START_TIMEOUT_S = 60.0


def freeze_startup_heap() -> int:
    """Move every object alive now to the collector's permanent generation; returns how many.

    The model, torch, transformers, pydantic and Milvus Lite's in-process server are millions
    of long-lived objects, and a full collection walks them all with the GIL held, which every
    thread of the ingest loop waits out (``streamer_gc_pause_seconds``; figures in
    docs/benchmarks.md). None of them will become garbage, so they are left out of collections
    from now on, as gc.freeze() is meant for.
    """
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("start-up heap exempted from garbage collection", objects=count)
    return count


async def run_service(settings: Settings, role: Role = "all", *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the exit code."""
    check_streaming_settings(settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests run it in-process)
            pass
    try:
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(stop.set)  # last out: whatever ended the service, every loop sees it
            tasks = await _start(settings, ROLES[role], role, stop, stack)
            return await _wait(tasks, stop, settings.service.shutdown_timeout_s)
    except StreamerError:
        raise
    except TimeoutError as exc:
        raise StreamerError(f"start-up or shutdown timed out: {exc}") from exc


async def _wait(tasks: list[asyncio.Task[None]], stop: asyncio.Event, shutdown_timeout_s: float) -> int:
    """Until ``stop`` or a part ends; a part that failed fails the service."""
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    for task in done:
        error = task.exception() if task is not stopper else None
        if error is not None:
            raise error
    await asyncio.wait_for(asyncio.gather(*tasks), shutdown_timeout_s)
    log.info("streamer stopped cleanly")
    return 0


def _spawn(
    stack: contextlib.AsyncExitStack, stop: asyncio.Event, coro: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    """Start a loop whose teardown comes before that of everything started before it."""
    task = asyncio.create_task(coro, name=name)

    async def cancel() -> None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    stack.push_async_callback(cancel)
    stack.callback(stop.set)  # first: every loop sees the stop before any is cancelled
    return task


async def _start(
    settings: Settings, parts: RoleParts, role: Role, stop: asyncio.Event, stack: contextlib.AsyncExitStack
) -> list[asyncio.Task[None]]:
    """Start the role's parts, each registered for teardown on ``stack``; returns the running loops."""
    k = settings.kafka
    metrics = Metrics()
    health = Health()
    http = HealthServer(metrics, health, settings.service.http_host, settings.service.http_port)
    await http.start()
    stack.push_async_callback(http.stop)
    stack.callback(metrics.watch_gc().install().remove)
    # Re-clustering is background work. With the window in a child process, that process runs
    # at nice +10 and what is left here (matching ids, encoding state) is short Python that
    # holds the GIL: niced, the thread holding it would wait behind the model's threads while
    # the event loop waits for the GIL (a priority inversion), so it runs at normal priority.
    # Without the child, the compute is here too and the thread is niced.
    background = BlockingRunner(1, name="streamer-recluster", niceness=0 if settings.tracking.window_process else 10)
    stack.callback(background.shutdown)
    runner = BlockingRunner(settings.service.blocking_workers)
    stack.callback(runner.shutdown)
    # The embeddings in flight beside the one being stored (see IngestPipeline.run).
    model_runner = BlockingRunner(max(1, k.batches_in_flight - 1), name="streamer-model-calls")
    stack.callback(model_runner.shutdown)

    # Start-up: each dependency is checked once, with a clear error if it is not there.
    embedder = await runner.run(FlagEmbedder, settings.embedding)
    stack.callback(embedder.close)
    health.set("model", True)
    store = await _open_store(settings, embedder.dim, runner, stack)
    health.set("milvus", True)
    await ensure_topics(
        k,
        {
            k.input_topic: {"partitions": k.partitions},
            k.assignments_topic: {"partitions": k.partitions},
            k.cluster_events_topic: {"partitions": k.partitions},
            k.dead_letter_topic: {"partitions": 1},
            settings.tracking.arrivals_topic: {
                "partitions": k.partitions,
                # A batch with its vectors: 64 headlines of 1,024-d are ~0.3 MB; allow large batches.
                "config": {"max.message.bytes": str(STATE_MAX_BYTES)},
            },
            settings.tracking.state_topic: {
                "partitions": 1,
                "config": {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)},
            },
        },
        timeout_s=_START_TIMEOUT_S,
    )
    sink = AiokafkaSink(k)
    await sink.start(timeout_s=_START_TIMEOUT_S)
    stack.push_async_callback(sink.stop)

    config = recluster_config(settings)
    if not parts.colocated:
        # Split roles: arrivals reach the window through the arrivals topic; the store is read
        # back only at a takeover (the rows from before it).
        config = dataclasses.replace(config, catch_up_every_run=False, arrivals_forwarded=True)
    window = None
    if parts.recluster and settings.tracking.window_process:
        window = ProcessWindowCompute(config, embedder.dim, run_timeout_s=settings.tracking.window_run_timeout_s)
        # Registered before it starts: a run still computing is dropped at teardown (the window
        # is read back at the next start).
        stack.callback(window.close)
        await background.run(window.start)
    # What was published per headline: a few windows' worth, so followers stay bounded too.
    holder = SnapshotHolder(max_tracked=4 * settings.tracking.max_window_size)
    registry = ClusterRegistry(
        match_threshold=settings.tracking.match_threshold, split_min_share=settings.tracking.split_min_share
    )
    election = LeaderElection(
        k, topic=settings.tracking.state_topic, group_id=f"{k.group_id}-recluster",
        on_change=lambda _leading: reclusterer.wake(),
    )
    leadership = Leadership(election.term)
    reclusterer = Reclusterer(
        store=store, sink=sink, runner=background, holder=holder, registry=registry, metrics=metrics,
        config=config, dim=embedder.dim, window=window, leadership=leadership,
        read_state=lambda: read_state(k, settings.tracking.state_topic, timeout_s=_START_TIMEOUT_S),
    )
    reclusterer.restore(await read_state(k, settings.tracking.state_topic, timeout_s=_START_TIMEOUT_S))
    retrier = Retrier(metrics, health, stop, initial_s=k.retry_backoff_ms / 1000, max_s=10.0)
    tasks: list[asyncio.Task[None]] = []
    if parts.recluster and not parts.colocated:
        # Ingest runs in other processes (--role ingest): their batches come through Kafka. The
        # follower pins its start before this instance may lead, so that a takeover's read of the
        # store and the batches it takes from the topic leave no gap between them.
        replicas = ReplicaArrivals(
            holder=holder, registry=registry, window=reclusterer, sink=sink, leadership=leadership,
            retrier=retrier, metrics=metrics, state_topic=settings.tracking.state_topic,
            placement=ArrivalPlacement(
                holder, ArrivalAssigner(ingest_config(settings).emerging, registry, leadership.leads), registry
            ),
            restored=lambda: reclusterer.restored_placed,
        )
        pinned = asyncio.Event()
        tasks.append(_spawn(
            stack, stop, follow_arrivals(k, settings.tracking.arrivals_topic, replicas.take, stop, pinned=pinned),
            "arrivals",
        ))
        await asyncio.wait_for(pinned.wait(), _START_TIMEOUT_S)
    if parts.recluster:
        # Leading starts with a takeover (a new epoch, the latest state, the last run's events re-sent).
        await election.start(timeout_s=_START_TIMEOUT_S)
        stack.push_async_callback(election.stop)
        tasks.append(_spawn(stack, stop, reclusterer.run(stop, retrier), "recluster"))
    if parts.follows_snapshots or parts.recluster:
        tasks.append(
            _spawn(stack, stop, _follow_state(settings, holder, background, leadership, parts, stop), "state")
        )
    if parts.ingest:
        source = AiokafkaSource(k)
        metrics.watch_topic(k.input_topic)
        await source.start(timeout_s=_START_TIMEOUT_S)
        stack.push_async_callback(source.stop)
        pipeline = IngestPipeline(
            source=source, sink=sink, embedder=embedder, store=store, runner=runner, holder=holder,
            metrics=metrics, health=health, config=ingest_config(settings),
            listener=reclusterer if parts.colocated else None,
            forwarder=None if parts.colocated else KafkaArrivalForwarder(sink, settings.tracking.arrivals_topic),
            # Only the re-clusterer's leader owns the id counter, so only it starts emerging topics.
            registry=registry if parts.colocated else None,
            may_mint=leadership.leads,
            leader_epoch=lambda: leadership.epoch,
            model_runner=model_runner,
        )
        tasks.append(_spawn(stack, stop, pipeline.run(stop), "ingest"))
    health.set("kafka", True)
    if settings.service.freeze_startup_heap:
        if freeze_startup_heap():
            stack.callback(gc.unfreeze)  # the process may go on (tests run the service in-process)
    log.info("streamer running", role=role, http_port=http.bound_port)
    return tasks


async def _open_store(settings: Settings, dim: int, runner: BlockingRunner, stack: contextlib.AsyncExitStack) -> VectorStore:
    """Milvus, with Milvus Lite's searches answered by the in-process mirror when enabled, and a
    server's searched without waiting for its time tick (Bounded + this process's recent writes)."""
    milvus = MilvusStore(settings.milvus, dim)
    stack.callback(milvus.close)
    await asyncio.wait_for(runner.run(milvus.open), _START_TIMEOUT_S)
    if settings.milvus.is_server:
        keep_s = settings.milvus.recent_overlay_s
        return RecentOverlayStore(milvus, keep_s=keep_s) if keep_s > 0 else milvus
    if not settings.milvus.lite_local_search:
        return milvus
    mirror = MirroredStore(
        milvus, dim, exact_below=settings.milvus.lite_mirror_exact_below, nprobe=settings.milvus.lite_mirror_nprobe
    )
    return await runner.run(mirror.load)


async def _follow_state(
    settings: Settings,
    holder: SnapshotHolder,
    background: BlockingRunner,
    leadership: Leadership,
    parts: RoleParts,
    stop: asyncio.Event,
) -> None:
    """Watch the state topic: leader claims (a newer one deposes this instance) and, for ingest,
    the leader's snapshots (a leader in this process swaps its own in)."""
    decoding: set[asyncio.Task[None]] = set()

    async def take_snapshot(value: bytes) -> None:
        # Decoding a large window's snapshot takes seconds of JSON parsing: off the event loop.
        try:
            live = await background.run(lambda: snapshot_from_state(decode_state(value)))
        except Exception as exc:  # a bad record must not stop ingest: keep the snapshot we have
            log.error("snapshot from the state topic could not be decoded", error=str(exc)[:300])
            return
        current = holder.current
        if current is None or live.snapshot.run_id > current.snapshot.run_id:
            holder.swap(live)
            log.info("snapshot received", run_id=live.snapshot.run_id)

    def on_state(key: bytes, value: bytes) -> None:
        if key == LEADER_KEY:
            leadership.observe(decode_claim(value))
        elif key == STATE_SNAPSHOT_KEY and parts.follows_snapshots and not leadership.leads():
            task = asyncio.create_task(take_snapshot(value), name="snapshot-decode")
            decoding.add(task)
            task.add_done_callback(decoding.discard)

    await follow_state(settings.kafka, settings.tracking.state_topic, on_state, stop)
