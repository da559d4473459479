"""Fixtures and helpers for tests that run streamer itself against real Kafka and Milvus.

- ``embedder`` (session): the real bundled model (all-MiniLM-L6-v2 via FlagEmbedding).
- ``service_factory``: start ``streamer run`` as a subprocess with given settings, wait until
  /readyz answers 200, and stop (SIGTERM, then SIGKILL) everything it started at teardown.
- ``read_topic``: every message of a topic, read from the beginning until idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings_env(settings: dict[str, dict[str, Any]]) -> dict[str, str]:
    """``{"kafka": {"group_id": "g"}}`` -> ``{"STREAMER_KAFKA__GROUP_ID": "g"}``."""
    return {
        f"STREAMER_{section.upper()}__{name.upper()}": str(value)
        for section, values in settings.items()
        for name, value in values.items()
    }


@dataclass
class ServiceProcess:
    """One ``streamer run`` subprocess."""

    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    http_port: int = 0

    def start(self, *, ready_timeout_s: float = 120) -> ServiceProcess:
        self.http_port = int(self.env.get("STREAMER_SERVICE__HTTP_PORT", "0")) or free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        env.update(self.env)
        env["STREAMER_SERVICE__HTTP_PORT"] = str(self.http_port)
        env.setdefault("STREAMER_SERVICE__LOG_FORMAT", "json")
        self.log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "run", *self.args],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        self.wait_ready(ready_timeout_s)
        return self

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=2) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"streamer exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.readyz()[0] == 200:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise AssertionError(f"streamer not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """SIGKILL: no shutdown, nothing flushed or committed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"streamer did not stop within {timeout_s}s:\n{self.log_tail()}") from None

    def metric_value(self, name: str, labels: str = "") -> float:
        needle = f"{name}{{{labels}}}" if labels else name
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith(needle + " ") or (not labels and line.startswith(name + "{")):
                total += float(line.rsplit(" ", 1)[1])
        return total


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
    from streamer.config import EmbeddingSettings
    from streamer.embedding import FlagEmbedder

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
