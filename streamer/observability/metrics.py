"""Prometheus metrics and the HTTP endpoints /metrics, /healthz, /readyz.

Naming: ``streamer_<thing>_<unit>``, base units (seconds, ratio), counters end in
``_total``. Labels are a stage, topic, partition, reason or event type: bounded
sets, never a headline or cluster id. Every object lives in the
:class:`Metrics` instance's own registry (no module-level state), so two
pipelines in one process (tests) do not collide.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from streamer import __version__
from streamer.observability.logs import get_logger

__all__ = ["Metrics", "Health", "STAGES", "DLQ_REASONS", "LIFECYCLE_TYPES"]

log = get_logger(__name__)

STAGES = ("fetch", "validate", "embed", "mirror", "upsert", "search", "assign", "produce", "commit", "recluster", "state", "probe")
# Known label values, exported as zero series at start so increase() sees the first event.
DLQ_REASONS = ("empty", "oversized", "invalid_utf8", "invalid_json", "not_an_object", "invalid_fields", "embedding_failed")
LIFECYCLE_TYPES = ("created", "updated", "merged", "split", "expired")
RUN_OUTCOMES = ("ok", "skipped", "failed")  # skipped: a timer tick with nothing new
ASSIGNMENT_LABELS = (
    ("arrival", "assigned"), ("arrival", "noise"), ("arrival", "unassigned"), ("recluster", "assigned"), ("recluster", "noise"),
)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
_RECLUSTER_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


class Metrics:
    """Every Prometheus object streamer exports."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.info = Info("streamer_build", "Version of streamer", registry=r)
        self.info.info({"version": __version__})
        self.consumed = Counter("streamer_messages_consumed_total", "Messages read from Kafka", ["topic"], registry=r)
        self.processed = Counter(
            "streamer_messages_processed_total", "Headlines embedded, stored and assigned", ["topic"], registry=r
        )
        self.dead_lettered = Counter(
            "streamer_messages_dead_lettered_total", "Messages sent to the dead-letter topic", ["reason"], registry=r
        )
        self.batch_size = Histogram(
            "streamer_batch_size_messages",
            "Messages per micro-batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.stage_seconds = Histogram(
            "streamer_stage_duration_seconds", "Time per pipeline stage and batch", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.gc_pause_seconds = Histogram(
            "streamer_gc_pause_seconds", "Garbage collections of the service's interpreter, by generation",
            ["generation"], buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "streamer_end_to_end_latency_seconds",
            "From the message's Kafka timestamp to its assignment event being acknowledged",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "streamer_consumer_lag_messages", "Messages behind the partition end", ["topic", "partition"], registry=r
        )
        self.assignments = Counter(
            "streamer_assignment_events_total", "Assignment events published", ["reason", "status"], registry=r
        )
        self.recluster_seconds = Histogram(
            "streamer_recluster_duration_seconds", "Duration of a re-clustering run", buckets=_RECLUSTER_BUCKETS,
            registry=r,
        )
        self.recluster_runs = Counter("streamer_recluster_runs_total", "Re-clustering runs", ["outcome"], registry=r)
        self.recluster_last_seconds = Gauge(
            "streamer_recluster_last_duration_seconds", "Duration of the latest successful re-clustering run", registry=r
        )
        self.recluster_last_success = Gauge(
            "streamer_recluster_last_success_timestamp_seconds",
            "When the snapshot was last known current (a run finished, or a tick found nothing new)", registry=r
        )
        self.recluster_leader = Gauge(
            "streamer_recluster_leader", "1 on the instance that currently runs the re-clusterer", registry=r
        )
        self.clusters_alive = Gauge("streamer_clusters_alive", "Clusters in the latest snapshot", registry=r)
        self.noise_share = Gauge("streamer_noise_ratio", "Share of the window that is noise", registry=r)
        self.window_size = Gauge("streamer_window_headlines", "Headlines in the clustering window", registry=r)
        self.lifecycle = Counter(
            "streamer_lifecycle_events_total", "Cluster lifecycle events published", ["type"], registry=r
        )
        self.errors = Counter("streamer_errors_total", "Errors by pipeline stage", ["stage"], registry=r)
        self.retries = Counter("streamer_retries_total", "Retried batches by stage", ["stage"], registry=r)
        self.ready = Gauge("streamer_ready", "1 when Kafka, Milvus and the model are ready", registry=r)
        for stage in STAGES:  # export zeros so dashboards and alerts have series before the first event
            self.errors.labels(stage)
            self.retries.labels(stage)
        for reason in DLQ_REASONS:
            self.dead_lettered.labels(reason)
        for kind in LIFECYCLE_TYPES:
            self.lifecycle.labels(kind)
        for outcome in RUN_OUTCOMES:
            self.recluster_runs.labels(outcome)
        for reason, status in ASSIGNMENT_LABELS:
            self.assignments.labels(reason, status)

    def timed(self, stage: str) -> _StageTimer:
        """``with metrics.timed("embed"):`` observes the block's duration in ``stage_seconds`` when it succeeds."""
        return _StageTimer(self, stage)

    def watch_gc(self) -> GcPauses:
        """Time the interpreter's garbage collections (they stop every thread that needs the GIL)."""
        return GcPauses(self.gc_pause_seconds)

    def watch_topic(self, topic: str) -> None:
        """Export zero series for a topic's counters before its first message."""
        self.consumed.labels(topic)
        self.processed.labels(topic)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class GcPauses:
    """A ``gc.callbacks`` hook: each collection's duration into a histogram, long ones logged.

    A collection of the oldest generation walks every object the process holds (the model,
    Milvus Lite's server, the registry) with the GIL held, so every thread stops meanwhile.
    Installed by the service for its lifetime (:meth:`install`, :meth:`remove`).
    """

    #: A pause worth a log line: it shows as arrival latency.
    LOG_ABOVE_S = 0.1

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self._started is None:
            return
        took = time.perf_counter() - self._started
        self._started = None
        generation = info.get("generation", -1)
        self._histogram.labels(str(generation)).observe(took)
        if took >= self.LOG_ABOVE_S:
            log.warning("long garbage collection", generation=generation, seconds=round(took, 3),
                        collected=info.get("collected"))

    def install(self) -> GcPauses:
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


@dataclass
class Health:
    """Readiness of each dependency, set by the pipeline as it learns it."""

    components: dict[str, bool] = field(default_factory=lambda: {"kafka": False, "milvus": False, "model": False})
    detail: dict[str, str] = field(default_factory=dict)

    def set(self, component: str, ok: bool, detail: str = "") -> None:
        self.components[component] = ok
        if detail:
            self.detail[component] = detail
        else:
            self.detail.pop(component, None)

    @property
    def ready(self) -> bool:
        return all(self.components.values())




class _StageTimer:
    def __init__(self, metrics: Metrics, stage: str) -> None:
        self._metrics = metrics
        self._stage = stage
        self._started = 0.0

    def __enter__(self) -> _StageTimer:
        self._started = time.perf_counter()
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._metrics.stage_seconds.labels(self._stage).observe(time.perf_counter() - self._started)


