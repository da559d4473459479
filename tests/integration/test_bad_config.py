"""``streamer run`` with bad configuration: a non-zero exit within a bounded time, one clear
error line on stderr (no traceback), and nothing half-written.

The five cases run as concurrent subprocesses (one module fixture) to keep the suite short;
each test then checks its own case. Start-up order is model -> Milvus -> Kafka, so:

- invalid value, unknown model: nothing is created (no Milvus Lite file, no topics);
- wrong Milvus URI: no topics;
- dimension mismatch: the existing collection is left as it was, no topics;
- unreachable broker: no topics (there is no broker); the Milvus collection was already
  created by then, and holds no rows.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from tests.plugins.streamer_fixtures import (
    REPO,
    free_port,
    isolated_settings,
    settings_env,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

#: Five services start at once, each importing torch and loading the model before it meets the bad
#: setting: 20-30 s on a quiet 2-core machine, 80 s seen when other jobs share it. The bound tells a
#: clean failure from a service that keeps retrying; it is not a speed figure.
EXIT_WITHIN_S = 150.0


@dataclass
class Outcome:
    settings: dict[str, dict[str, Any]]
    returncode: int | None
    seconds: float
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """stderr without the JSON log lines."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("{")]


def _base(tmp: Path, name: str, bootstrap: str) -> dict[str, dict[str, Any]]:
    return isolated_settings(
        bootstrap,
        kafka={"request_timeout_ms": 3000},
        milvus={"uri": str(tmp / name / "milvus.db"), "collection": "headlines", "timeout_s": 5},
        service={"http_port": 0},
    )


def _precreate_dim8(uri: str, collection: str) -> None:
    """A collection streamer would use, but made for 8-d vectors (in a child process: Milvus Lite
    keeps a file open for as long as the process that opened it lives)."""
    code = (
        "import sys; from streamer.config.connections import MilvusSettings; from streamer.adapters.milvus.store import MilvusStore\n"
        "with MilvusStore(MilvusSettings(uri=sys.argv[1], collection=sys.argv[2]), 8): pass"
    )
    subprocess.run([sys.executable, "-c", code, uri, collection], check=True, cwd=REPO, capture_output=True)


def _topics(bootstrap: str) -> set[str]:
    async def go() -> set[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return set(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(go())


def _streamer_topics(s: dict[str, dict[str, Any]]) -> set[str]:
    k = s["kafka"]
    return {k["input_topic"], k["assignments_topic"], k["cluster_events_topic"], k["dead_letter_topic"],
            s["tracking"]["state_topic"]}


def _rows(uri: str, collection: str, dim: int) -> tuple[int, int]:
    """(rows, dim) of an existing collection, read with pymilvus directly."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        described = client.describe_collection(collection)
        vector = next(f for f in described["fields"] if f["name"] == "vector")
        stats = client.get_collection_stats(collection)
        return int(stats["row_count"]), int(vector["params"]["dim"])
    finally:
        client.close()


@pytest.fixture(scope="module")
def outcomes(kafka_bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Outcome]]:
    tmp = tmp_path_factory.mktemp("bad-config")
    bootstrap = kafka_bootstrap_servers
    cases: dict[str, dict[str, dict[str, Any]]] = {}
    cases["unreachable_broker"] = _base(tmp, "unreachable_broker", f"127.0.0.1:{free_port()}")
    cases["wrong_milvus_uri"] = _base(tmp, "wrong_milvus_uri", bootstrap)
    cases["wrong_milvus_uri"]["milvus"]["uri"] = f"http://127.0.0.1:{free_port()}"
    cases["unknown_model"] = _base(tmp, "unknown_model", bootstrap)
    cases["unknown_model"]["embedding"] = {"model": "no-such-org/no-such-model"}
    cases["dimension_mismatch"] = _base(tmp, "dimension_mismatch", bootstrap)
    (tmp / "dimension_mismatch").mkdir()
    _precreate_dim8(cases["dimension_mismatch"]["milvus"]["uri"], "headlines")
    cases["invalid_value"] = _base(tmp, "invalid_value", bootstrap)
    cases["invalid_value"]["clustering"] = {"min_cluster_size": 1}

    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    running = {}
    for name, s in cases.items():
        out, err = (tmp / f"{name}.out").open("wb"), (tmp / f"{name}.err").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "run"], env={**env, **settings_env(s)},
                                stdout=out, stderr=err, cwd=REPO)
        running[name] = (proc, time.monotonic(), out, err)
    results: dict[str, Outcome] = {}
    try:
        deadline = time.monotonic() + EXIT_WITHIN_S + 30
        while len(results) < len(running) and time.monotonic() < deadline:
            for name, (proc, started, _, _) in running.items():
                if name not in results and proc.poll() is not None:
                    results[name] = Outcome(cases[name], proc.returncode, time.monotonic() - started, "", "")
            time.sleep(0.1)
        for name, (proc, started, _, _) in running.items():
            results.setdefault(name, Outcome(cases[name], None, time.monotonic() - started, "", ""))
    finally:
        for name, (proc, _, out, err) in running.items():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            out.close()
            err.close()
            results[name].stdout = (tmp / f"{name}.out").read_text(errors="replace")
            results[name].stderr = (tmp / f"{name}.err").read_text(errors="replace")
    yield results


def _assert_clean_failure(o: Outcome, expected_rc: int = 1) -> str:
    assert o.returncode is not None, f"still running after {o.seconds:.0f}s:\n{o.stderr[-2000:]}"
    assert o.returncode == expected_rc, f"exit {o.returncode}:\n{o.stderr[-2000:]}"
    assert o.seconds < EXIT_WITHIN_S, f"took {o.seconds:.0f}s to fail"
    assert "Traceback" not in o.stderr + o.stdout, o.stderr[-3000:]
    assert o.error_lines and o.error_lines[0].startswith("error: "), o.stderr[-2000:]
    print(f"\n[bad-config] exit {o.returncode} after {o.seconds:.1f}s: {o.error_lines[0][:200]}")
    return o.error_lines[0]


def test_unreachable_broker(outcomes: dict[str, Outcome]) -> None:
    o = outcomes["unreachable_broker"]
    line = _assert_clean_failure(o)
    assert len(o.error_lines) == 1
    assert "Kafka" in line and o.settings["kafka"]["bootstrap_servers"].rsplit(":", 1)[1] in line
    # The collection was created before Kafka was tried; nothing was written to it.
    rows, dim = _rows(o.settings["milvus"]["uri"], "headlines", 384)
    assert (rows, dim) == (0, 384)


def test_wrong_milvus_uri(outcomes: dict[str, Outcome], kafka_bootstrap_servers: str) -> None:
    o = outcomes["wrong_milvus_uri"]
    line = _assert_clean_failure(o)
    assert len(o.error_lines) == 1
    assert "Milvus" in line and o.settings["milvus"]["uri"].rsplit(":", 1)[1] in line
    assert not _streamer_topics(o.settings) & _topics(kafka_bootstrap_servers)


def test_unknown_model(outcomes: dict[str, Outcome], kafka_bootstrap_servers: str) -> None:
    o = outcomes["unknown_model"]
    line = _assert_clean_failure(o)
    assert len(o.error_lines) == 1
    assert "no-such-org/no-such-model" in line
    assert not Path(o.settings["milvus"]["uri"]).exists()
    assert not _streamer_topics(o.settings) & _topics(kafka_bootstrap_servers)


def test_dimension_mismatch(outcomes: dict[str, Outcome], kafka_bootstrap_servers: str) -> None:
    o = outcomes["dimension_mismatch"]
    line = _assert_clean_failure(o)
    assert len(o.error_lines) == 1
    assert "8-d" in line and "384-d" in line
    assert _rows(o.settings["milvus"]["uri"], "headlines", 8) == (0, 8)  # left as it was
    assert not _streamer_topics(o.settings) & _topics(kafka_bootstrap_servers)


def test_invalid_value(outcomes: dict[str, Outcome], kafka_bootstrap_servers: str) -> None:
    o = outcomes["invalid_value"]
    _assert_clean_failure(o, expected_rc=2)
    # "error: invalid configuration:" then one line per bad setting, naming the variable.
    assert o.error_lines[0] == "error: invalid configuration:"
    assert len(o.error_lines) == 2
    assert "clustering.min_cluster_size (STREAMER_CLUSTERING__MIN_CLUSTER_SIZE)" in o.error_lines[1]
    assert "got '1'" in o.error_lines[1]
    # Refused before anything started: no component logged a line (no model, store or broker touched).
    assert not [line for line in (o.stdout + o.stderr).splitlines() if line.startswith("{")], o.stderr[-2000:]
    assert not Path(o.settings["milvus"]["uri"]).exists()
    assert not _streamer_topics(o.settings) & _topics(kafka_bootstrap_servers)
