"""``streamer run``: wire adapters, the ingest loop and the re-clusterer into one service.

Part of the composition root (with ``cli``): the only place besides ``cli`` that
builds adapters. Start-up fails fast with a clear error when the model, Milvus
or Kafka cannot be reached; once running, dependency outages are retried.

Roles:
- ``all`` (default): ingest, plus the re-clusterer while this instance holds the
  re-clusterer leadership (Kafka group on the state topic); followers receive the
  leader's snapshots through the state topic.
- ``ingest``: ingest only (follows snapshots).
- ``recluster``: the re-clusterer only; its window catches up from Milvus.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Literal

from streamer.arrivals import EmergingRule
from streamer.batch import params_from_settings
from streamer.concurrency import BlockingRunner
from streamer.config import Settings
from streamer.errors import StreamerError
from streamer.logs import get_logger
from streamer.metrics import Health, HealthServer, Metrics
from streamer.pipeline import IngestConfig, IngestPipeline, Retrier, SnapshotHolder
from streamer.recluster import STATE_SNAPSHOT_KEY, ReclusterConfig, Reclusterer, decode_state, snapshot_from_state
from streamer.tracking import ClusterRegistry
from streamer.window_compute import ProcessWindowCompute

__all__ = ["run_service", "Role"]

log = get_logger(__name__)

Role = Literal["all", "ingest", "recluster"]
_START_TIMEOUT_S = 60.0


def freeze_startup_heap() -> int:
    """Move every object alive now to the collector's permanent generation; returns how many.

    The model, torch, transformers, pydantic and Milvus Lite's in-process server are millions
    of long-lived objects, and a full (generation 2) collection walks them all with the GIL
    held: 0.3-0.36 s each at a 5k-headline window, which every thread of the ingest loop
    waits out (``streamer_gc_pause_seconds``; docs/benchmarks.md). None of them will become
    garbage, so they are left out of collections from now on, as gc.freeze() is meant for.
    """
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("start-up heap exempted from garbage collection", objects=count)
    return count


def recluster_config(settings: Settings) -> ReclusterConfig:
    t = settings.tracking
    return ReclusterConfig(
        k=settings.graph.k,
        graph_method=settings.graph.method,
        approx_threshold=settings.graph.approx_threshold,
        params=params_from_settings(settings.clustering),
        min_points=settings.clustering.min_points,
        keywords=settings.clustering.keywords,
        window_s=t.window_s,
        max_window_size=t.max_window_size,
        interval_s=t.recluster_interval_s,
        every_n=t.recluster_every_n,
        every_unplaced=t.recluster_noise_n,
        delete_expired=t.delete_expired_from_store,
        drift_share=t.drift_rebuild_share,
        state_topic=t.state_topic,
        settle_s=t.settle_s,
        # Milvus Lite is one process per database file: nobody else writes to it, so after the
        # first read (rows from before a restart) there is nothing to catch up on.
        catch_up_every_run=settings.milvus.is_server,
    )


async def run_service(settings: Settings, role: Role = "all", *, stop: asyncio.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); returns the exit code."""
    from streamer.embedding import FlagEmbedder
    from streamer.kafka_io import (
        STATE_MAX_BYTES,
        AiokafkaSink,
        AiokafkaSource,
        LeaderElection,
        ensure_topics,
        follow_state,
        read_state,
    )
    from streamer.mirror import MirroredStore
    from streamer.store import MilvusStore

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests run it in-process)
            pass
    k = settings.kafka
    metrics = Metrics()
    health = Health()
    http = HealthServer(metrics, health, settings.service.http_host, settings.service.http_port)
    gc_pauses = metrics.watch_gc().install()
    runner = BlockingRunner(settings.service.blocking_workers)
    # The embeddings in flight beside the one being stored (see IngestPipeline.run).
    model_runner = BlockingRunner(max(1, k.batches_in_flight - 1), name="streamer-model-calls")
    # Re-clustering is background work. With the window in a child process, that process runs
    # at nice +10 and what is left here (matching ids, encoding state) is short Python that
    # holds the GIL: at nice +10 the thread holding it would wait behind the model's threads
    # while the event loop waits for the GIL (a priority inversion), so it runs at normal
    # priority. Without the child, the compute is here too and the thread is niced.
    background = BlockingRunner(
        1, name="streamer-recluster", niceness=0 if settings.tracking.window_process else 10
    )
    await http.start()
    store = None
    embedder: FlagEmbedder | None = None
    sink = AiokafkaSink(k)
    source = AiokafkaSource(k) if role != "recluster" else None
    election = LeaderElection(k, topic=settings.tracking.state_topic, group_id=f"{k.group_id}-recluster")
    tasks: list[asyncio.Task[None]] = []
    window: ProcessWindowCompute | None = None
    frozen = 0
    try:
        # Start-up: each dependency is checked once, with a clear error if it is not there.
        embedder = await runner.run(FlagEmbedder, settings.embedding)
        health.set("model", True)
        milvus = MilvusStore(settings.milvus, embedder.dim)
        store = milvus
        await asyncio.wait_for(runner.run(milvus.open), _START_TIMEOUT_S)
        if not settings.milvus.is_server and settings.milvus.lite_local_search:
            mirror = MirroredStore(
                milvus,
                embedder.dim,
                exact_below=settings.milvus.lite_mirror_exact_below,
                nprobe=settings.milvus.lite_mirror_nprobe,
            )
            store = await runner.run(mirror.load)
        health.set("milvus", True)
        await ensure_topics(
            k,
            {
                k.input_topic: {"partitions": k.partitions},
                k.assignments_topic: {"partitions": k.partitions},
                k.cluster_events_topic: {"partitions": k.partitions},
                k.dead_letter_topic: {"partitions": 1},
                settings.tracking.state_topic: {
                    "partitions": 1,
                    "config": {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)},
                },
            },
            timeout_s=_START_TIMEOUT_S,
        )
        await sink.start(timeout_s=_START_TIMEOUT_S)
        recluster = recluster_config(settings)
        if role in ("all", "recluster") and settings.tracking.window_process:
            window = ProcessWindowCompute(recluster, embedder.dim)
            await background.run(window.start)
        holder = SnapshotHolder()
        registry = ClusterRegistry(
            match_threshold=settings.tracking.match_threshold, split_min_share=settings.tracking.split_min_share
        )
        reclusterer = Reclusterer(
            store=store,
            sink=sink,
            runner=background,
            holder=holder,
            registry=registry,
            metrics=metrics,
            config=recluster,
            dim=embedder.dim,
            window=window,
        )
        reclusterer.restore(await read_state(k, settings.tracking.state_topic, timeout_s=_START_TIMEOUT_S))
        retrier = Retrier(metrics, health, stop, initial_s=k.retry_backoff_ms / 1000, max_s=10.0)
        if reclusterer.restored_emerging and role != "ingest":
            # A crash may have come between writing a topic's state and sending its created event;
            # the event is the same one (same id) when it did get out, so downstream drops the copy.
            created = [registry.minted_event(cid) for cid in reclusterer.restored_emerging]
            await retrier.run("produce", "kafka", lambda: sink.send_cluster_events(created))
        if role in ("all", "recluster"):
            await election.start(timeout_s=_START_TIMEOUT_S)
            tasks.append(asyncio.create_task(reclusterer.run(stop, retrier, election.is_leader), name="recluster"))

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
            # Followers take the leader's snapshots; the leader already swapped its own in.
            if key == STATE_SNAPSHOT_KEY and not election.is_leader():
                task = asyncio.create_task(take_snapshot(value), name="snapshot-decode")
                decoding.add(task)
                task.add_done_callback(decoding.discard)

        if role in ("all", "ingest"):
            tasks.append(asyncio.create_task(follow_state(k, settings.tracking.state_topic, on_state, stop), name="state"))
        if source is not None:
            metrics.watch_topic(k.input_topic)
            await source.start(timeout_s=_START_TIMEOUT_S)
            health.set("kafka", True)
            pipeline = IngestPipeline(
                source=source,
                sink=sink,
                embedder=embedder,
                store=store,
                runner=runner,
                holder=holder,
                metrics=metrics,
                health=health,
                config=IngestConfig(
                    max_batch_size=k.max_batch_size,
                    max_batch_wait_ms=k.max_batch_wait_ms,
                    batches_in_flight=k.batches_in_flight,
                    max_message_bytes=k.max_message_bytes,
                    k=settings.graph.k,
                    retry_initial_s=k.retry_backoff_ms / 1000,
                    emerging=EmergingRule(
                        attach_similarity=settings.clustering.attach_similarity,
                        emerging_similarity=settings.tracking.emerging_similarity,
                        emerging_min_size=settings.tracking.emerging_min_size,
                    ),
                    state_topic=settings.tracking.state_topic,
                    write_behind=settings.milvus.lite_write_behind,
                    max_unstored=settings.milvus.lite_write_behind_rows,
                ),
                listener=reclusterer if role == "all" else None,
                batch_lock=source.batch_lock,
                # Only the re-clusterer's leader owns the id counter, so only it starts emerging topics.
                registry=registry if role == "all" else None,
                may_mint=election.is_leader,
                model_runner=model_runner,
            )
            tasks.append(asyncio.create_task(pipeline.run(stop), name="ingest"))
        else:
            health.set("kafka", True)
        if settings.service.freeze_startup_heap:
            frozen = freeze_startup_heap()
        log.info("streamer running", role=role, http_port=http.bound_port)
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        for task in done:
            if task is not stopper and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        await asyncio.wait_for(asyncio.gather(*tasks), settings.service.shutdown_timeout_s)
        log.info("streamer stopped cleanly")
        return 0
    except StreamerError:
        raise
    except TimeoutError as exc:
        raise StreamerError(f"start-up or shutdown timed out: {exc}") from exc
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await election.stop()
        if source is not None:
            await source.stop()
        await sink.stop()
        if store is not None:
            store.close()
        runner.shutdown()
        model_runner.shutdown()
        if embedder is not None:
            embedder.close()
        if window is not None:
            window.close()  # a run still computing is dropped: the window is read back at the next start
        background.shutdown()
        gc_pauses.remove()
        if frozen:
            gc.unfreeze()  # the process may go on (tests run the service in-process)
        await http.stop()
