"""Shared fixtures. Real Kafka and Milvus servers come from the plugins below (session-scoped,
started once, stopped at the end, never skipped: a server that cannot start fails the run)."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.plugins.kafka_broker", "tests.plugins.milvus_server", "tests.plugins.streamer_fixtures"]

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_streamer_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No STREAMER_* variable from the caller's shell changes what a test sees."""
    for name in list(os.environ):
        if name.startswith("STREAMER_"):
            monkeypatch.delenv(name, raising=False)
    yield
    gc.collect()  # pins ResourceWarnings (unclosed clients) on the test that caused them
