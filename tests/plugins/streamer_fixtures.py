"""Fixtures and helpers for tests that run streamer itself against real Kafka and Milvus.

- ``embedder`` (session): the real bundled model (all-MiniLM-L6-v2 via FlagEmbedding).
- ``service_factory``: start ``streamer run`` as a subprocess with given settings, wait until
  /readyz answers 200, and stop (SIGTERM, then SIGKILL) everything it started at teardown.
- ``read_topic``: every message of a topic, read from the beginning until idle.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

from streamer_process import ServiceProcess, free_port, settings_env  # noqa: E402

__all__ = ["ServiceProcess", "free_port", "settings_env", "read_all", "isolated_settings"]


def isolated_settings(bootstrap: str, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Settings with a consumer group and topics no other test uses; ``sections`` are merged on top."""
    import uuid

    run = uuid.uuid4().hex[:8]
    base: dict[str, dict[str, Any]] = {
        "kafka": {
            "bootstrap_servers": bootstrap,
            "group_id": f"g-{run}",
            "input_topic": f"in-{run}",
            "assignments_topic": f"assign-{run}",
            "cluster_events_topic": f"clusters-{run}",
            "dead_letter_topic": f"dlq-{run}",
        },
        "tracking": {"state_topic": f"state-{run}"},
    }
    for section, values in sections.items():
        base.setdefault(section, {}).update(values)
    return base


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[ServiceProcess] = []

    def make(settings: dict[str, dict[str, Any]], *, args: list[str] | None = None, name: str = "svc") -> ServiceProcess:
        svc = ServiceProcess(settings_env(settings), tmp_path / f"{name}-{len(started)}.log", args or [])
        started.append(svc)
        return svc

    yield make
    for svc in started:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.proc.send_signal(signal.SIGTERM)
            try:
                svc.proc.wait(30)
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait(10)


@pytest.fixture(scope="session")
def embedder() -> Any:
    from streamer.adapters.embedding import FlagEmbedder
    from streamer.config.sections import EmbeddingSettings

    return FlagEmbedder(EmbeddingSettings(threads=2))


async def read_all(bootstrap: str, topic: str, *, idle_s: float = 3.0, timeout_s: float = 60) -> list[Any]:
    """Every message of ``topic`` from the beginning, until ``idle_s`` without new ones."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=int(idle_s * 1000))
            if not batches:
                break
            for messages in batches.values():
                out.extend(messages)
    finally:
        await consumer.stop()
    return out


@pytest.fixture
def read_topic(kafka_bootstrap_servers: str) -> Any:
    def read(topic: str, *, idle_s: float = 3.0, timeout_s: float = 60) -> list[Any]:
        return asyncio.run(read_all(kafka_bootstrap_servers, topic, idle_s=idle_s, timeout_s=timeout_s))

    return read
