"""``streamer serve`` as a subprocess for the API and browser tests, and what they compare against.

:class:`ServeProcess` starts it on a free 127.0.0.1 port and waits for /readyz (the feed caught
up); the fixture ``serve_factory`` stops every one it started (SIGTERM, then SIGKILL).
:func:`replay` is the reference the tests check the API against: the output topics read the
plain way (latest assignment per headline, topic state from the lifecycle events).
"""

from __future__ import annotations

import json
import os
import signal
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

from tests.plugins.streamer_fixtures import free_port, settings_env

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ServeProcess:
    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready_timeout_s: float = 120) -> ServeProcess:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
        env.update(self.env)
        env["STREAMER_SERVICE__HTTP_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", *self.args],
            env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT, cwd=REPO,
        )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"streamer serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self.get("/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"streamer serve not ready after {ready_timeout_s}s:\n{self.log_tail()}")

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def get(self, path: str) -> tuple[int, Any]:
        return self.request("GET", path)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout_s: float = 30) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


@pytest.fixture
def serve_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[ServeProcess] = []

    def make(settings: dict[str, dict[str, Any]], args: list[str] | None = None) -> ServeProcess:
        proc = ServeProcess(settings_env(settings), tmp_path / f"serve-{len(started)}.log", args or [])
        started.append(proc)
        return proc

    yield make
    for proc in started:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
            try:
                proc.proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.proc.kill()
                proc.proc.wait(10)


@dataclass
class Replay:
    """The topics as a plain reader of the events sees them."""

    cluster_of: dict[str, int]
    time_of: dict[str, int]
    source_of: dict[str, str | None]
    state: dict[int, str]
    merges: list[tuple[int, list[int]]]
    splits: list[tuple[int, int]]  # (child, parent)
    events: int

    def members(self, cid: int) -> set[str]:
        return {h for h, c in self.cluster_of.items() if c == cid}


def replay(assignments: list[Any], lifecycle: list[Any]) -> Replay:
    """``assignments`` / ``lifecycle``: aiokafka messages of each topic (partition order)."""
    cluster_of: dict[str, int] = {}
    time_of: dict[str, int] = {}
    source_of: dict[str, str | None] = {}
    for m in assignments:
        e = json.loads(m.value)
        cluster_of[e["headline_id"]] = e["cluster_id"]
        time_of.setdefault(e["headline_id"], e["published_at_ms"] if e["published_at_ms"] is not None else e["emitted_at_ms"])
        source_of.setdefault(e["headline_id"], e.get("source"))
    state: dict[int, str] = {}
    merges, splits = [], []
    for m in lifecycle:
        e = json.loads(m.value)
        if e["type"] == "expired":
            state[e["cluster_id"]] = "expired"
        else:
            state.setdefault(e["cluster_id"], "live")
        if e["type"] == "merged":
            merges.append((e["cluster_id"], e["merged_from"]))
        if e["split_from"] is not None:
            splits.append((e["cluster_id"], e["split_from"]))
    for survivor, absorbed in merges:
        for cid in absorbed:
            state[cid] = "merged"
    return Replay(cluster_of, time_of, source_of, state, merges, splits, len(assignments) + len(lifecycle))
