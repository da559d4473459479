"""Retrying a step while its dependency is away: exponential backoff, readiness, metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from streamer.domain.errors import StreamerError
from streamer.observability.logs import get_logger
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import wait_for_any

log = get_logger(__name__)


T = TypeVar("T")


class ShutdownRequested(Exception):
    """Raised inside a retry loop when the service is asked to stop: the batch stays uncommitted."""


class Retrier:
    """Repeat a step while it fails with a retriable :class:`StreamerError`, with exponential backoff."""

    def __init__(self, metrics: Metrics, health: Health, stop: asyncio.Event, initial_s: float, max_s: float) -> None:
        self._metrics = metrics
        self._health = health
        self._stop = stop
        self._initial_s = initial_s
        self._max_s = max_s

    async def run(self, stage: str, component: str, step: Callable[[], Awaitable[T]]) -> T:
        delay = self._initial_s
        while True:
            try:
                result = await step()
            except StreamerError as exc:
                self._metrics.errors.labels(stage).inc()
                if not exc.retriable:
                    raise
                self._health.set(component, False, str(exc)[:300])
                self._metrics.retries.labels(stage).inc()
                log.warning("retrying after failure", stage=stage, error=str(exc)[:300], retry_in_s=delay)
                if await wait_for_any(self._stop, timeout_s=delay):
                    raise ShutdownRequested(stage) from exc
                delay = min(delay * 2, self._max_s)
                continue
            if not self._health.components.get(component, True):
                log.info("dependency back", component=component)
            self._health.set(component, True)
            return result


