"""pytest plugin: one real Apache Kafka 4.x broker (KRaft, 127.0.0.1 only) per test session.

Register with ``pytest_plugins = ["tests.plugins.kafka_broker"]`` in tests/conftest.py.

Fixtures
--------
``kafka_broker`` (session)
    A running :class:`tools.kafka.broker.KafkaBroker`. ``.bootstrap_servers`` is the PLAINTEXT
    listener, ``.sasl_bootstrap_servers`` a SASL_PLAINTEXT listener with SCRAM-SHA-256/512 for
    user ``SCRAM_USER`` / ``SCRAM_PASSWORD``. Tests may ``kill()`` / ``restart()`` it (same ports,
    same data); a test that kills it must restart it (see ``ensure_running``).
    Start failures fail the tests (never skip).
``kafka_bootstrap_servers`` (session)
    ``kafka_broker.bootstrap_servers``.
``kafka_scram_credentials`` (session)
    ``(SCRAM_USER, SCRAM_PASSWORD)``.
``kafka_topic`` (function)
    Factory ``make(partitions=1, *, config=None, prefix="test") -> str`` creating a uniquely named
    topic with aiokafka's admin client and waiting until every partition has a leader. Sync, so it
    works in sync and async tests alike (it runs its own event loop in a helper thread).

The first session on a machine runs Maven once to fetch the jars (~10 s) into
``<repo>/.cache/kafka/libs`` (``$KAFKA_LIBS_DIR`` overrides); after that the broker starts in ~2-3 s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

SCRAM_USER = "streamer"
SCRAM_PASSWORD = "streamer-secret-pw"
START_TIMEOUT_S = float(os.environ.get("STREAMER_KAFKA_START_TIMEOUT", "90"))
REPO_ROOT = Path(__file__).resolve().parents[2]


def _load_broker_module():
    try:
        from tools.kafka import (
            broker,  # repo root on sys.path (python -m pytest / rootdir conftest)
        )
        return broker
    except ImportError:
        path = REPO_ROOT / "tools" / "kafka" / "broker.py"
        spec = importlib.util.spec_from_file_location("tools.kafka.broker", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module


broker_module = _load_broker_module()
KafkaBroker = broker_module.KafkaBroker
KafkaBrokerError = broker_module.KafkaBrokerError


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "integration: needs a real external service (e.g. the Kafka broker)")


def ensure_running(broker: "KafkaBroker", timeout_s: float = START_TIMEOUT_S) -> None:
    """Restart ``broker`` (same ports and data) if a test left it killed or stopped."""
    if not broker.is_running:
        broker.start(timeout_s)


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory):
    workdir = tmp_path_factory.mktemp("kafka-broker", numbered=True)
    broker = KafkaBroker(workdir, scram_users={SCRAM_USER: SCRAM_PASSWORD})
    error: BaseException | None = None
    try:
        broker.start(timeout_s=START_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - report anything, never skip
        error = exc
        broker.kill()
    if error is not None:  # outside the except block: no chained traceback noise
        pytest.fail(f"could not start the Kafka test broker in {workdir}:\n{error}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap_servers(kafka_broker: "KafkaBroker") -> str:
    return kafka_broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_scram_credentials() -> tuple[str, str]:
    return SCRAM_USER, SCRAM_PASSWORD


def _run_sync(coro_fn: Callable[[], Any], timeout_s: float) -> Any:
    """Run an async callable on a private loop in a helper thread (safe inside a running loop)."""
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-admin") as pool:
        return pool.submit(asyncio.run, coro_fn()).result(timeout=timeout_s)


async def create_topic(
    bootstrap_servers: str,
    name: str,
    partitions: int = 1,
    *,
    config: dict[str, str] | None = None,
    timeout_s: float = 30.0,
) -> None:
    """Create ``name`` and wait until all its partitions have a leader (aiokafka admin client)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=int(timeout_s * 1000))
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, topic_configs=config or {})]
        )
        for topic_error in resp.topic_errors:
            err_name, code = topic_error[0], topic_error[1]
            if code != 0:
                raise RuntimeError(f"CreateTopics {err_name!r} failed: error {code} {topic_error[2:]}")
        deadline = time.monotonic() + timeout_s
        while True:
            (desc,) = await admin.describe_topics([name])
            parts = desc["partitions"]
            if desc["error_code"] == 0 and len(parts) == partitions and all(p["leader"] >= 0 for p in parts):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topic {name!r} not ready after {timeout_s}s: {desc}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


@pytest.fixture
def kafka_topic(kafka_broker: "KafkaBroker") -> Callable[..., str]:
    def make(partitions: int = 1, *, config: dict[str, str] | None = None, prefix: str = "test") -> str:
        ensure_running(kafka_broker)
        name = f"{prefix}-{uuid.uuid4().hex}"
        _run_sync(lambda: create_topic(kafka_broker.bootstrap_servers, name, partitions, config=config), 60)
        return name

    return make
