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
4. match clusters to the previous run (stable ids);
5. persist the registry (new ids, the run id, the run's events as an outbox) and the
   snapshot to the compacted state topic, then swap the snapshot in for the ingest loop
   in one reference assignment and publish the lifecycle events and the assignment
   events of headlines whose cluster changed.

Persisting first means that no published event names an id or run id the state does not
hold: a crash in between is repaired by the next leader, which re-sends the outbox (same
deterministic event ids). Only the leader runs (:mod:`streamer.service.leadership`): a
takeover reads the latest state before its first run and claims a new epoch; a run whose
leadership ended while it computed persists and publishes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import numpy as np

from streamer.core.publishing import republish
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
from streamer.domain.events import AssignmentEvent, AssignmentReason, ClusterEvent
from streamer.domain.headline import Headline
from streamer.domain.ports import Arrivals, EventSink, VectorStore
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Metrics
from streamer.service.catch_up import StoreCatchUp
from streamer.service.concurrency import BlockingRunner, wait_for_any
from streamer.service.leadership import (
    LEADER_KEY,
    Claim,
    Deposed,
    Leadership,
    encode_claim,
    with_epoch,
)
from streamer.service.recluster_state import registry_record, restore_state
from streamer.service.retry import Retrier, ShutdownRequested
from streamer.service.run_report import RunReport, observe_run
from streamer.service.snapshots import (
    STATE_REGISTRY_KEY,
    STATE_SNAPSHOT_KEY,
    LiveSnapshot,
    SnapshotHolder,
    encode_state,
    snapshot_to_state,
)

#: Reads the state topic's latest value per key (the composition root binds the Kafka adapter).
StateReader = Callable[[], Awaitable[dict[bytes, bytes]]]

__all__ = ["Reclusterer", "RunReport"]

log = get_logger(__name__)



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
        leadership: Leadership | None = None,
        read_state: StateReader | None = None,
    ) -> None:
        """``leadership`` says when this instance may run (default: always, as in tests and
        benches); ``read_state`` is read at every takeover (default: nothing to read)."""
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
        self._store_catch_up = StoreCatchUp(store, runner, dim, every_run=config.catch_up_every_run)
        #: Emerging topics minted after the last run and brought back by :meth:`restore`.
        self.restored_emerging: list[int] = []
        self.leadership = leadership if leadership is not None else Leadership()
        self._read_state = read_state
        self._restored_epoch = 0
        self._resend: tuple[list[ClusterEvent], list[AssignmentEvent]] = ([], [])
        self._unheard: set[str] = set()  # see ReclusterConfig.arrivals_forwarded
        #: Placements a split-topology leader published since its last run (restored at a takeover).
        self.restored_placed: dict[str, AssignmentEvent] = {}

    def wake(self) -> None:
        """Look at the leadership now (the election calls it when this instance wins or loses)."""
        self._trigger.set()

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
    async def run(self, stop: asyncio.Event, retrier: Retrier, is_leader: Callable[[], bool] | None = None) -> None:
        """Run on triggers until ``stop``, only while this instance leads (``is_leader``, when
        given, replaces the leadership passed at construction)."""
        if is_leader is not None:
            self.leadership = Leadership.from_flag(is_leader)
        while not stop.is_set():
            await wait_for_any(self._trigger, stop, timeout_s=self._config.interval_s)
            if stop.is_set():
                return
            self._trigger.clear()
            leading = self.leadership.elected()
            self._metrics.recluster_leader.set(1 if leading else 0)
            try:
                if self.leadership.needs_takeover():
                    await self.take_over(retrier)
                if not self.leadership.leads():
                    self._bound_pending()
                    continue
                await self.run_once(retrier)
            except ShutdownRequested:
                return
            except Deposed as exc:
                self._metrics.recluster_runs.labels("fenced").inc()
                log.warning("re-clustering run dropped: this instance no longer leads", error=str(exc))
            except Exception as exc:  # a failed run must not stop ingest; the next trigger tries again
                self._metrics.recluster_runs.labels("failed").inc()
                self._metrics.errors.labels("recluster").inc()
                log.exception("re-clustering run failed", error=str(exc))

    async def take_over(self, retrier: Retrier) -> int:
        """Become the leader: claim an epoch, then read the latest state and re-send what the last
        leader may not have published.

        The claim (above every epoch in the state read first) goes out before the read that
        counts, which waits ``takeover_grace_s``: a deposed leader sees the
        claim (its state follower) before the read, so whatever it still persisted is read here,
        and nothing it persists later gets published. The counter, run id and membership are then
        the previous leader's latest, whatever this instance loaded at start; its window is read
        back from the store at the next run. Returns the epoch claimed.
        """
        if self._read_state is not None:  # the epochs claimed so far, so that ours is above them
            self.restore(await retrier.run("state", "kafka", self._read_state))
        epoch = self.leadership.claim(self._restored_epoch)
        await self._write_claim(retrier, epoch)
        if self._read_state is not None:
            await asyncio.sleep(self._config.takeover_grace_s)
            self.restore(await retrier.run("state", "kafka", self._read_state))
            # What downstream holds for arrivals since the last run is published membership.
            covered = self._holder.current.snapshot.position if self._holder.current is not None else {}
            for hid, cid in self._holder.last_assigned.items():
                if cid >= 0 and hid not in covered:
                    self.registry.record(cid, [hid])
        self.leadership.check(epoch)
        await self._write_claim(retrier, epoch)  # with the floors just read
        cluster_events, assignments = self._resend
        created = [self.registry.minted_event(cid) for cid in self.restored_emerging]
        # The last run may have died between persisting and publishing; emerging topics between
        # writing their state and their events. The copies carry the same event ids.
        if created or cluster_events:
            await retrier.run("produce", "kafka", lambda: self._sink.send_cluster_events([*cluster_events, *created]))
        if assignments:
            await retrier.run("produce", "kafka", lambda: self._sink.send_assignments(assignments))
        self._resend = ([], [])
        self._store_catch_up.reset()  # the window catches up from the store
        self.leadership.confirm(epoch)
        log.info("re-clusterer leadership taken", epoch=epoch, run_id=self.registry.run_id, next_id=self.registry.next_id)
        return epoch

    async def _write_claim(self, retrier: Retrier, epoch: int) -> None:
        """The leader record: this epoch, and the counters persisted so far (floors for any reader)."""
        claim = encode_claim(Claim(epoch, self.leadership.owner, self.registry.next_id, self.registry.run_id))
        topic = self._config.state_topic
        await retrier.run("state", "kafka", lambda: self._sink.send_state(topic, LEADER_KEY, claim))

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
            self._store_catch_up.reset()
            log.info("follower dropped arrivals older than a window; it reads them back if it leads", dropped=dropped)

    # -- one run -------------------------------------------------------------------------
    def _compute(self, run_id: int, pending: list[Arrivals], caught_up: CaughtUp) -> WindowChange:
        """Blocking part of a run (the background thread): the window takes the arrivals and clusters."""
        return self.window.compute(run_id, [ArrivalRows.from_arrivals(a) for a in pending], caught_up)

    async def _catch_up(self, retrier: Retrier) -> CaughtUp:
        buffered = {h.id for arrivals in self._pending for h in arrivals.headlines}
        return await self._store_catch_up.read(retrier, lambda hid: hid in self.window or hid in buffered)

    async def run_once(self, retrier: Retrier) -> RunReport | None:
        started = time.perf_counter()
        phases: dict[str, float] = {}
        mark = started

        def phase(name: str) -> None:
            nonlocal mark
            now = time.perf_counter()
            phases[name] = round(now - mark, 3)
            mark = now

        if self.leadership.needs_takeover():  # called directly (tests, benches): the first run takes over
            await self.take_over(retrier)
        epoch = self.leadership.epoch
        if epoch is None:
            raise Deposed("this instance does not lead the re-clusterer")
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
            self._store_catch_up.reset()
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
        self.leadership.check(epoch)  # a deposed leader's run ends here: nothing matched, persisted or published
        tracking = await self._runner.run(
            self.registry.update, computed.ids, computed.clustering.labels, computed.summaries
        )
        phase("track")
        live = LiveSnapshot(computed.snapshot, tracking.stable_ids)
        cluster_events = with_epoch(tracking.events, epoch)
        assignments = with_epoch(self._changed_assignments(computed, live), epoch)
        self.leadership.check(epoch)
        await self.persist(retrier, live, epoch, cluster_events, assignments)
        phase("persist")
        # Fenced again after the write: a newer leader's claim seen meanwhile stops the events.
        # (The record it may have overwritten names this run's ids; the new leader read the state
        # before claiming, so it mints above them.)
        self.leadership.check(epoch)
        self._holder.swap(live)
        await retrier.run("produce", "kafka", lambda: self._sink.send_cluster_events(cluster_events))
        await retrier.run("produce", "kafka", lambda: self._sink.send_assignments(assignments))
        self._holder.record_published(assignments)
        phase("publish")
        report = RunReport.of(
            computed, tracking.run_id, len(expired), cluster_events, len(assignments),
            time.perf_counter() - started, phases,
        )
        observe_run(self._metrics, report, cluster_events, assignments)
        log.info("re-clustering run done", **vars(report))
        return report

    def _changed_assignments(self, computed: ComputedRun, live: LiveSnapshot) -> list[AssignmentEvent]:
        snapshot = computed.snapshot
        clusters = [live.stable(int(label)) for label in snapshot.labels.tolist()]
        published = [self._holder.published(hid) for hid in computed.ids]
        if self._config.arrivals_forwarded:
            # Not heard of yet: its batch is on the arrivals topic. Treated as unchanged for one run.
            known = self._holder.last_assigned
            unheard = {hid for hid in computed.ids if hid not in known and hid not in self._unheard}
            published = [clusters[i] if hid in unheard else p for i, (hid, p) in enumerate(zip(computed.ids, published))]
            self._unheard = unheard
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

    async def persist(
        self,
        retrier: Retrier,
        live: LiveSnapshot,
        epoch: int,
        cluster_events: list[ClusterEvent],
        assignments: list[AssignmentEvent],
    ) -> None:
        """The registry record (with the run's events) first, then the snapshot."""
        started = time.perf_counter()
        registry_bytes = await self._runner.run(
            lambda: encode_state(registry_record(self.registry, epoch, cluster_events, assignments))
        )
        snapshot_bytes = await self._runner.run(encode_state, snapshot_to_state(live))
        topic = self._config.state_topic
        await retrier.run("state", "kafka", lambda: self._sink.send_state(topic, STATE_REGISTRY_KEY, registry_bytes))
        await retrier.run("state", "kafka", lambda: self._sink.send_state(topic, STATE_SNAPSHOT_KEY, snapshot_bytes))
        await self._write_claim(retrier, epoch)
        self._metrics.stage_seconds.labels("state").observe(time.perf_counter() - started)

    def restore(self, state: dict[bytes, bytes]) -> None:
        """Load the registry and snapshot read back from the state topic (a start, a takeover)."""
        restored = restore_state(state, self.registry, self._holder, owner=self.leadership.owner)
        self.restored_emerging = restored.emerging
        self._restored_epoch = max(self._restored_epoch, restored.epoch)
        if restored.claim is not None:
            self.leadership.observe(restored.claim)
        self._resend = (restored.cluster_events, [*restored.assignments, *restored.placed])
        self.restored_placed = {e.headline_id: e for e in restored.placed}
