"""Consumer lag and broker readiness, reported on a timer beside the ingest loop."""

from __future__ import annotations

import asyncio

from streamer.domain.errors import StreamerError
from streamer.domain.ports import HeadlineSource
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import wait_for_any

__all__ = ["report_lag"]

log = get_logger(__name__)


async def report_lag(
    source: HeadlineSource, metrics: Metrics, health: Health, stop: asyncio.Event, interval_s: float
) -> None:
    """Lag gauge and broker probe every ``interval_s`` (readiness must drop even with no traffic)."""
    reported: set[tuple[str, str]] = set()
    probe_failed = False
    while not stop.is_set():
        try:
            await source.probe()
            if probe_failed:
                health.set("kafka", True)
            probe_failed = False
        except StreamerError as exc:
            probe_failed = True
            metrics.errors.labels("probe").inc()
            health.set("kafka", False, str(exc)[:300])
            log.warning("kafka probe failed", error=str(exc)[:300])
        try:
            current = {(t, str(p)): lag for (t, p), lag in (await source.lag()).items()}
        except StreamerError as exc:
            log.debug("lag unavailable", error=str(exc))
            current = None
        if current is not None:
            for key, lag in current.items():
                metrics.consumer_lag.labels(*key).set(lag)
            # Partitions that moved to another member in a rebalance: their lag is not ours to report.
            for key in reported - set(current):
                metrics.consumer_lag.remove(*key)
            reported = set(current)
        await wait_for_any(stop, timeout_s=interval_s)
