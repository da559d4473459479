"""What one re-clustering run did: its report (logged, returned to callers) and its metrics."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamer.core.window import ComputedRun
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.observability.metrics import Metrics

__all__ = ["RunReport", "observe_run"]


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

    @classmethod
    def of(
        cls,
        computed: ComputedRun,
        run_id: int,
        expired: int,
        cluster_events: Sequence[ClusterEvent],
        reassigned: int,
        duration_s: float,
        phases_s: dict[str, float],
    ) -> RunReport:
        counts: dict[str, int] = {}
        for event in cluster_events:
            counts[event.type.value] = counts.get(event.type.value, 0) + 1
        return cls(
            run_id=run_id,
            window=len(computed.ids),
            clusters=computed.clustering.n_clusters,
            noise_share=round(computed.clustering.noise_share, 4),
            expired=expired,
            events=counts,
            reassigned=reassigned,
            duration_s=round(duration_s, 3),
            phases_s=phases_s,
        )


def observe_run(
    metrics: Metrics, report: RunReport, cluster_events: Sequence[ClusterEvent], assignments: Sequence[AssignmentEvent]
) -> None:
    """A successful run's gauges and counters."""
    m = metrics
    for event in cluster_events:
        m.lifecycle.labels(event.type.value).inc()
    m.recluster_seconds.observe(report.duration_s)
    m.stage_seconds.labels("recluster").observe(report.duration_s)
    m.recluster_last_seconds.set(report.duration_s)
    m.recluster_last_success.set(time.time())
    m.recluster_runs.labels("ok").inc()
    m.clusters_alive.set(report.clusters)
    m.noise_share.set(report.noise_share)
    m.window_size.set(report.window)
    for event in assignments:
        m.assignments.labels(event.reason.value, event.status.value).inc()
