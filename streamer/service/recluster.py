"""The windowed re-clusterer: keeps the window's graph, runs HDBSCAN, tracks ids, publishes changes.

A run (:meth:`Reclusterer.run_once`) is triggered every ``recluster_interval_s``,
after ``recluster_every_n`` arrivals, or after ``recluster_noise_n`` arrivals the
snapshot could not place (a new story is breaking), whichever comes first, and as
soon as the window first holds ``min_points`` headlines:

1. catch up with Milvus: rows ingested since the last run that the window has not
   seen (other ingest instances, or everything after a restart) join it;
2. off the event loop, with arrivals buffered meanwhile: expire headlines older
   than ``window_s`` before the newest event time (or beyond ``max_window_size``),
   repair or rebuild the graph, run HDBSCAN, summarise clusters, freeze a snapshot
   (:mod:`streamer.core.window`; the service keeps the window in a child process
   so that this Python does not hold the ingest loop's GIL);
3. delete expired headlines from Milvus (by policy);
4. match clusters to the previous run (stable ids) and swap the snapshot in for
   the ingest loop in one reference assignment;
5. publish lifecycle events and the assignment events of headlines whose cluster
   changed, then persist the registry and snapshot to the compacted state topic.

Publishing before persisting keeps it at-least-once: a crash in between repeats
the events (same deterministic ids) rather than losing them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamer.core.tracking import ClusterRegistry
from streamer.core.window import (
    ArrivalRows,
    CaughtUp,
    ComputedRun,
    ReclusterConfig,
    WindowChange,
    WindowCompute,
    WindowComputer,
    WindowLost,
)
from streamer.domain.events import AssignmentEvent, AssignmentReason
from streamer.domain.headline import Headline
from streamer.domain.ports import Arrivals, EventSink, VectorStore
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Metrics
from streamer.service.concurrency import BlockingRunner, wait_for_any
from streamer.service.retry import Retrier, ShutdownRequested
from streamer.service.snapshots import (
    STATE_ID_COUNTER_KEY,
    STATE_REGISTRY_KEY,
    STATE_SNAPSHOT_KEY,
    LiveSnapshot,
    SnapshotHolder,
    decode_state,
    encode_state,
    snapshot_from_state,
    snapshot_to_state,
)
from streamer.core.publishing import republish

__all__ = ["Reclusterer", "RunReport", ]

log = get_logger(__name__)

# Ingest instances stamp ingested_at with their own clocks: re-read a little before the last
# row seen so a slightly late clock cannot hide rows from the catch-up read.
_CATCH_UP_SLACK_MS = 10_000




@dataclass
class RunReport:
    run_id: int
    window: int
    clusters: int
    noise_share: float
    expired: int
    events: dict[str, int]
    reassigned: int
    duration_s: float
    phases_s: dict[str, float] = field(default_factory=dict)  # where the run spent its time










class Reclusterer:
    """Owns the window and the registry; turns them into snapshots and events on a schedule."""

    def __init__(
        self,
        *,
        store: VectorStore,
        sink: EventSink,
        runner: BlockingRunner,
        holder: SnapshotHolder,
        registry: ClusterRegistry,
        metrics: Metrics,
        config: ReclusterConfig,
        dim: int,
        window: WindowComputer | None = None,
    ) -> None:
        self._store = store
        self._sink = sink
        self._runner = runner
        self._holder = holder
        self.registry = registry
        self._metrics = metrics
        self._config = config
        self._dim = dim
        #: Where the window lives: this process (tests, benches) or a child process (the service).
        self.window: WindowComputer = window if window is not None else WindowCompute(config, dim)
        self._pending: list[Arrivals] = []
        self._arrivals_since_run = 0
        self._unplaced_since_run = 0
        self._trigger = asyncio.Event()
        self._ingested_watermark_ms = 0
        #: Emerging topics minted after the last run and brought back by :meth:`restore`.
        self.restored_emerging: list[int] = []

    # -- arrivals (event loop) -----------------------------------------------------------
    def on_arrivals(self, arrivals: Arrivals) -> None:
        """Buffer a processed batch; the window takes it in the worker thread at the next run."""
        self._pending.append(arrivals)
        self._arrivals_since_run += len(arrivals.headlines)
        self._unplaced_since_run += arrivals.unplaced
        known = len(self.window) + self._arrivals_since_run
        no_snapshot_yet = self._holder.current is None and known >= self._config.min_points
        # Arrivals the snapshot cannot place pile up when new stories break: re-cluster early so
        # they get topics (and ids) sooner instead of waiting for the count or the clock.
        emerging = self._config.every_unplaced and self._unplaced_since_run >= self._config.every_unplaced
        if self._arrivals_since_run >= self._config.every_n or emerging or no_snapshot_yet:
            self._trigger.set()

    # -- schedule ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, retrier: Retrier, is_leader: Any = None) -> None:
        """Run on triggers until ``stop``; only acts while ``is_leader()`` is true (when given)."""
        while not stop.is_set():
            await wait_for_any(self._trigger, stop, timeout_s=self._config.interval_s)
            if stop.is_set():
                return
            self._trigger.clear()
            leading = is_leader is None or is_leader()
            self._metrics.recluster_leader.set(1 if leading else 0)
            if not leading:
                self._bound_pending()
                continue
            try:
                await self.run_once(retrier)
            except ShutdownRequested:
                return
            except Exception as exc:  # a failed run must not stop ingest; the next trigger tries again
                self._metrics.recluster_runs.labels("failed").inc()
                self._metrics.errors.labels("recluster").inc()
                log.exception("re-clustering run failed", error=str(exc))

    def _bound_pending(self) -> None:
        """A follower's buffer keeps at most a window's worth of the newest arrivals.

        What it drops is in the store: when this instance takes over, its first run reads
        the store back from the start (the window it holds may be stale by then anyway).
        """
        buffered = sum(len(a.headlines) for a in self._pending)
        dropped = 0
        while self._pending and buffered - dropped > self._config.max_window_size:
            dropped += len(self._pending.pop(0).headlines)
        if dropped:
            self._ingested_watermark_ms = 0
            log.info("follower dropped arrivals older than a window; it reads them back if it leads", dropped=dropped)

    # -- one run -------------------------------------------------------------------------
    def _compute(self, run_id: int, pending: list[Arrivals], caught_up: CaughtUp) -> WindowChange:
        """Blocking part of a run (the background thread): the window takes the arrivals and clusters."""
        return self.window.compute(run_id, [ArrivalRows.from_arrivals(a) for a in pending], caught_up)

    async def _catch_up(self, retrier: Retrier) -> CaughtUp:
        """Rows Milvus holds that this instance has not seen (other ingest instances, a restart).

        Ids first, then vectors only for the ids the window and the arrival buffer lack: on a
        single instance that is nothing, and reading vectors back through Milvus Lite takes the
        collection's lock long enough (~0.3 s per 1,000 rows) to stall the ingest loop. With
        ``catch_up_every_run`` off (Milvus Lite: this process is its only writer) only the first
        run reads, to take in the rows stored before a restart.
        """
        nothing: CaughtUp = ([], np.zeros((0, self._dim), np.float32), [])
        if self._ingested_watermark_ms and not self._config.catch_up_every_run:
            # This process is the store's only writer (Milvus Lite) and read it once already. The
            # query would cost ~0.5 s at 10k rows of Lite's Python under its lock, stalling ingest.
            return nothing
        since = max(0, self._ingested_watermark_ms - _CATCH_UP_SLACK_MS) if self._ingested_watermark_ms else 0
        started_ms = int(time.time() * 1000)
        ids = await retrier.run("recluster", "milvus", lambda: self._runner.run(self._store.ids_since, since))
        buffered = {h.id for arrivals in self._pending for h in arrivals.headlines}
        missing = [hid for hid in ids if hid not in self.window and hid not in buffered]
        found = nothing
        if missing:
            found = await retrier.run("recluster", "milvus", lambda: self._runner.run(self._store.fetch_rows, missing))
        # Next time, read from a little before this read began (rows stamped meanwhile are re-listed, not lost).
        self._ingested_watermark_ms = max(self._ingested_watermark_ms, started_ms)
        return found

    async def run_once(self, retrier: Retrier) -> RunReport | None:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        mark = started

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round(now - mark, 3)
            mark = now

        caught_up = await self._catch_up(retrier)
        phase("catch_up")
        if not self._pending and not caught_up[0] and self._holder.current is not None:
            # A timer tick on a quiet stream: the window is unchanged (expiry follows event time,
            # which only arrivals move), so HDBSCAN would return the same snapshot. Skip it.
            self._metrics.recluster_runs.labels("skipped").inc()
            self._metrics.recluster_last_success.set(time.time())
            return None
        # This run takes every arrival buffered so far; the counts (and a trigger they set) start
        # over here, so arrivals during the compute count toward the next run instead of firing
        # an immediate second one.
        pending, self._pending = self._pending, []
        self._arrivals_since_run = 0
        self._unplaced_since_run = 0
        self._trigger.clear()
        try:
            change = await self._runner.run(self._compute, self.registry.run_id + 1, pending, caught_up)
        except WindowLost:
            # The window went with its process: read it back from the store at the next run,
            # as after a restart (the arrivals this run took are stored there too).
            self._ingested_watermark_ms = 0
            raise
        phase("compute")
        expired = change.expired
        if expired and self._config.delete_expired:
            await retrier.run("recluster", "milvus", lambda: self._runner.run(self._store.delete, expired))
        for hid in expired:
            self._holder.last_assigned.pop(hid, None)
        computed = change.computed
        if computed is None:
            return None
        tracking = await self._runner.run(
            self.registry.update, computed.ids, computed.clustering.labels, computed.summaries
        )
        phase("track")
        live = LiveSnapshot(computed.snapshot, tracking.stable_ids)
        self._holder.swap(live)
        assignments = self._changed_assignments(computed, live)
        await retrier.run("produce", "kafka", lambda: self._sink.send_cluster_events(tracking.events))
        await retrier.run("produce", "kafka", lambda: self._sink.send_assignments(assignments))
        self._holder.record_published(assignments)
        phase("publish")
        await self.persist(retrier, live)
        phase("persist")
        duration = time.perf_counter() - started
        counts: dict[str, int] = {}
        for event in tracking.events:
            counts[event.type.value] = counts.get(event.type.value, 0) + 1
            self._metrics.lifecycle.labels(event.type.value).inc()
        m = self._metrics
        m.recluster_seconds.observe(duration)
        m.stage_seconds.labels("recluster").observe(duration)
        m.recluster_last_seconds.set(duration)
        m.recluster_last_success.set(time.time())
        m.recluster_runs.labels("ok").inc()
        m.clusters_alive.set(computed.clustering.n_clusters)
        m.noise_share.set(computed.clustering.noise_share)
        m.window_size.set(len(computed.ids))
        for event in assignments:
            m.assignments.labels(event.reason.value, event.status.value).inc()
        report = RunReport(
            run_id=tracking.run_id,
            window=len(computed.ids),
            clusters=computed.clustering.n_clusters,
            noise_share=round(computed.clustering.noise_share, 4),
            expired=len(expired),
            events=counts,
            reassigned=len(assignments),
            duration_s=round(duration, 3),
            phases_s=phases,
        )
        log.info("re-clustering run done", **vars(report))
        return report

    def _changed_assignments(self, computed: ComputedRun, live: LiveSnapshot) -> list[AssignmentEvent]:
        snapshot = computed.snapshot
        clusters = [live.stable(int(label)) for label in snapshot.labels.tolist()]
        published = [self._holder.published(hid) for hid in computed.ids]
        settled_before_ms = None
        if self._config.settle_s > 0 and len(computed.ids):
            settled_before_ms = int(np.max(computed.event_times_ms)) - int(self._config.settle_s * 1000)
        events = []
        for pos in republish(clusters, published, computed.event_times_ms, settled_before_ms):
            hid, cluster = computed.ids[pos], clusters[pos]
            headline = Headline(
                id=hid,
                title=computed.titles[pos],
                published_at_ms=int(computed.event_times_ms[pos]),
            )
            events.append(
                AssignmentEvent.for_cluster(
                    headline=headline,
                    cluster_id=cluster,
                    probability=float(snapshot.probabilities[pos]),
                    run_id=snapshot.run_id,
                    reason=AssignmentReason.RECLUSTER,
                )
            )
        return events

    async def persist(self, retrier: Retrier, live: LiveSnapshot) -> None:
        started = time.perf_counter()
        registry_bytes = await self._runner.run(encode_state, self.registry.to_state())
        snapshot_bytes = await self._runner.run(encode_state, snapshot_to_state(live))
        topic = self._config.state_topic
        await retrier.run("state", "kafka", lambda: self._sink.send_state(topic, STATE_REGISTRY_KEY, registry_bytes))
        await retrier.run("state", "kafka", lambda: self._sink.send_state(topic, STATE_SNAPSHOT_KEY, snapshot_bytes))
        self._metrics.stage_seconds.labels("state").observe(time.perf_counter() - started)

    def restore(self, state: dict[bytes, bytes]) -> None:
        """Load the registry and snapshot read back from the state topic (after a restart)."""
        if STATE_SNAPSHOT_KEY in state:
            live = snapshot_from_state(decode_state(state[STATE_SNAPSHOT_KEY]))
            self._holder.swap(live)
            self._holder.seed_from(live)  # noise included: a restart does not re-publish it
        if STATE_REGISTRY_KEY in state:
            self.registry.load_state(decode_state(state[STATE_REGISTRY_KEY]))
            self._holder.last_assigned.update(self.registry.cluster_of())  # placements since the run
        if STATE_ID_COUNTER_KEY in state:  # ids minted for emerging topics after the last run
            self.restored_emerging = self.registry.restore_emerging(json.loads(state[STATE_ID_COUNTER_KEY]))
            self._holder.last_assigned.update(
                {hid: cid for cid in self.restored_emerging for hid in self.registry.clusters[cid].members}
            )
        log.info(
            "state restored",
            run_id=self.registry.run_id,
            clusters=len(self.registry.clusters),
            emerging=len(self.restored_emerging),
        )
