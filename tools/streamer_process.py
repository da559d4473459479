"""Run ``streamer run`` as a subprocess and watch it: used by the demo and the test suite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


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


