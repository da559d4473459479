"""The re-clusterer's side of the split topology: batches ingest replicas forwarded through Kafka.

Every re-clusterer process (leader and standbys) takes each forwarded batch:

- it remembers what each arrival event published (so a run publishes a re-assignment only
  for a headline whose cluster changed) and records placed arrivals in the registry (so the
  run matches its clusters against published membership, as with a colocated ingest loop);
- its window gets the arrivals (a standby keeps at most a window of them);
- the leader places the batch once more, beside the arrivals *every* replica forwarded since
  the snapshot (:class:`~streamer.core.arrivals.ArrivalAssigner`, the rule ingest uses): an
  arrival a replica published as noise that now follows a recent arrival or starts an
  emerging topic gets an ``emerging`` event, and a new topic's id, minted by the leader alone
  and persisted before its ``created`` event, is never handed out twice.

A copy of a headline already taken (a redelivered batch) is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from streamer.core.tracking import ClusterRegistry
from streamer.domain.events import AssignmentEvent, AssignmentReason, ClusterEvent
from streamer.domain.headline import NOISE, UNASSIGNED
from streamer.domain.ports import (
    ArrivalListener,
    Arrivals,
    EventSink,
    PublishedArrivals,
)
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Metrics
from streamer.service.leadership import Deposed, Leadership, with_epoch
from streamer.service.placement import ArrivalPlacement
from streamer.service.retry import Retrier, ShutdownRequested
from streamer.service.snapshots import STATE_ID_COUNTER_KEY, SnapshotHolder

__all__ = ["ReplicaArrivals"]

log = get_logger(__name__)


class ReplicaArrivals:
    """Takes forwarded batches into the holder, the registry, the window and (leading) placement."""

    def __init__(
        self,
        *,
        holder: SnapshotHolder,
        registry: ClusterRegistry,
        placement: ArrivalPlacement,
        window: ArrivalListener,
        sink: EventSink,
        leadership: Leadership,
        retrier: Retrier,
        metrics: Metrics,
        state_topic: str,
        restored: Callable[[], dict[str, AssignmentEvent]] = dict,
    ) -> None:
        """``restored`` gives the placements the last takeover brought back (see :meth:`_uncovered`)."""
        self._holder = holder
        self._registry = registry
        self._placement = placement
        self._window = window
        self._sink = sink
        self._leadership = leadership
        self._retrier = retrier
        self._metrics = metrics
        self._state_topic = state_topic
        self._restored = restored
        #: Placements this leader published that no snapshot covers yet (persisted with each change).
        self._placed: dict[str, AssignmentEvent] = {}
        self._placed_run = -1
        self._placed_epoch: int | None = None

    def _uncovered(self, epoch: int) -> dict[str, AssignmentEvent]:
        """Placements published (by this term, or the last leader's as restored) that the current
        snapshot does not cover: a run that took the headline in has published its verdict on it."""
        if epoch != self._placed_epoch:  # a new term starts from what the takeover restored
            self._placed_epoch, self._placed_run = epoch, -1
            self._placed = dict(self._restored())
        live = self._holder.current
        if live is not None and live.snapshot.run_id != self._placed_run:
            self._placed_run = live.snapshot.run_id
            position = live.snapshot.position
            self._placed = {hid: e for hid, e in self._placed.items() if hid not in position}
        return self._placed

    async def take(self, batch: PublishedArrivals) -> None:
        """Take a forwarded batch; never raises for one batch (the follower goes on with the next)."""
        arrivals = batch.arrivals
        fresh = [i for i, h in enumerate(arrivals.headlines) if h.id not in self._holder.last_assigned]
        if not fresh:
            return
        if len(fresh) < len(arrivals.headlines):
            arrivals, published = _subset(arrivals, fresh), [batch.published[i] for i in fresh]
        else:
            published = batch.published
        for headline, cluster in zip(arrivals.headlines, published, strict=True):
            self._holder.remember(headline.id, cluster)
        epoch = self._leadership.epoch
        try:
            if epoch is not None and self._leadership.leads() and self._holder.current is not None:
                await self._place(arrivals, published, epoch)
        except Deposed as exc:
            log.warning("placement of forwarded arrivals dropped: this instance no longer leads", error=str(exc))
        except ShutdownRequested:
            raise
        except Exception as exc:  # the batch still reaches the window; its arrival events stand
            self._metrics.errors.labels("replica_arrivals").inc()
            log.exception("placement of forwarded arrivals failed", error=str(exc)[:300])
        # A standby records nothing in the registry: a takeover replaces it, then records
        # what the holder remembers (Reclusterer.take_over).
        self._window.on_arrivals(arrivals)

    async def _place(self, arrivals: Arrivals, published: list[int], epoch: int) -> None:
        """The leader's second look: arrivals published as noise may follow, or start, a topic."""
        events, moved, started = self._placement.place(arrivals.headlines, arrivals.neighbour_ids, arrivals.neighbour_sims)
        changes: list[AssignmentEvent] = []
        for headline, event, cluster in zip(arrivals.headlines, events, published, strict=True):
            if event.cluster_id == cluster:
                continue
            if event.cluster_id == NOISE:
                # The replica placed it (a snapshot it had, a recent arrival of its own): downstream keeps that.
                if cluster != UNASSIGNED:
                    self._registry.record(cluster, [headline.id])
                continue
            change = AssignmentEvent.for_cluster(
                headline=headline, cluster_id=event.cluster_id, probability=event.probability, run_id=event.run_id,
                reason=AssignmentReason.EMERGING,
            )
            changes.append(change)
        changes, moved = with_epoch(changes, epoch), with_epoch(moved, epoch)
        created: list[ClusterEvent] = with_epoch(started, epoch)
        if not (created or moved or changes):
            return
        self._leadership.check(epoch)
        # The counter, the new topics and every placement published since the run, before the
        # events: a leader taking over after a crash knows what downstream holds for them.
        placed = self._uncovered(epoch)
        placed.update({e.headline_id: e for e in (*moved, *changes)})
        record = json.dumps(
            {**self._registry.emerging_state(), "events": [e.model_dump(mode="json") for e in placed.values()]}
        ).encode()
        await self._retrier.run(
            "state", "kafka", lambda: self._sink.send_state(self._state_topic, STATE_ID_COUNTER_KEY, record)
        )
        self._leadership.check(epoch)
        if created:
            await self._retrier.run("produce", "kafka", lambda: self._sink.send_cluster_events(created))
            for _ in created:
                self._metrics.lifecycle.labels("created").inc()
        if moved or changes:
            await self._retrier.run("produce", "kafka", lambda: self._sink.send_assignments([*moved, *changes]))
            self._holder.record_published([*moved, *changes])
            for event in (*moved, *changes):
                self._metrics.assignments.labels(event.reason.value, event.status.value).inc()


def _subset(arrivals: Arrivals, keep: list[int]) -> Arrivals:
    return Arrivals(
        [arrivals.headlines[i] for i in keep],
        arrivals.vectors[keep],
        [arrivals.neighbour_ids[i] for i in keep],
        arrivals.neighbour_sims[keep],
        arrivals.unplaced,
    )

