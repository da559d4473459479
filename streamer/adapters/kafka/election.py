"""Re-clusterer leadership through a Kafka consumer group (no ZooKeeper or etcd lease)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    KafkaError,
)

from streamer.adapters.kafka.client import client_options, translate_errors
from streamer.adapters.kafka.state import STATE_FETCH_OPTIONS
from streamer.config.connections import KafkaSettings
from streamer.observability.logs import get_logger

__all__ = ["LeaderElection"]

log = get_logger(__name__)

#: Leadership regained this soon after a rebalance took it is the same term.
_SAME_TERM_S = 5.0


class LeaderElection:
    """Leadership through Kafka: the group member that owns partition 0 of ``topic`` leads.

    Every instance joins the group ``group_id``; Kafka's group coordinator hands the
    single partition to exactly one live member and moves it when that member dies or
    leaves. The member keeps polling so the coordinator knows it is alive.
    """

    def __init__(
        self, settings: KafkaSettings, *, topic: str, group_id: str, on_change: Callable[[bool], None] | None = None
    ) -> None:
        """``on_change(leading)`` is called when this member wins or loses the leadership."""
        self._settings = settings
        self._on_change = on_change
        self._terms = 0
        self._lost_at = float("-inf")
        self._topic = topic
        self._group_id = group_id
        self._consumer: Any = None
        self._task: asyncio.Task[None] | None = None
        self._leading = False

    def is_leader(self) -> bool:
        return self._leading

    def term(self) -> int:
        """0 while not leading; otherwise a number that changes with every leadership won."""
        return self._terms if self._leading else 0

    def _set(self, leading: bool) -> None:
        now = asyncio.get_running_loop().time()
        if leading and not self._leading and now - self._lost_at > _SAME_TERM_S:
            # A rebalance revokes every partition and hands them out again (the eager protocol):
            # partition 0 back within moments is the same term, not a takeover. (Had another
            # member led meanwhile, its claim on the state topic starts a takeover anyway.)
            self._terms += 1
        if not leading and self._leading:
            self._lost_at = now
        changed = leading != self._leading
        self._leading = leading
        if changed and self._on_change is not None:
            self._on_change(leading)

    async def start(self, *, timeout_s: float = 60) -> None:
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            **STATE_FETCH_OPTIONS,
            **client_options(self._settings),
        )
        election = self

        class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                if revoked and election._leading:
                    log.info("re-clusterer leadership lost")
                election._set(False)

            async def on_partitions_assigned(self, assigned: Any) -> None:
                election._set(any(tp.partition == 0 for tp in assigned))
                if election._leading:
                    log.info("re-clusterer leadership acquired", group=election._group_id)

        consumer.subscribe([self._topic], listener=_Listener())
        with translate_errors("leader election start"):
            await asyncio.wait_for(consumer.start(), timeout_s)
        self._consumer = consumer
        self._task = asyncio.create_task(self._poll(), name="streamer-leader-election")

    async def _poll(self) -> None:
        while True:
            try:
                await self._consumer.getmany(timeout_ms=1000)
            except asyncio.CancelledError:
                raise
            except KafkaError as exc:  # the consumer reconnects by itself; keep polling
                log.warning("leader election poll failed", error=str(exc))
                await asyncio.sleep(1)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        self._set(False)
        if consumer is not None:
            await consumer.stop()


