#!/usr/bin/env python3
"""Real single-node Apache Kafka 4.x (KRaft) broker for streamer's tests and local dev.

Stdlib only. Needs ``java`` (17+) and, for the one-time jar download, ``mvn``.

Library use::

    from tools.kafka.broker import KafkaBroker

    with KafkaBroker(tmp_dir, scram_users={"streamer": "secret"}) as broker:
        broker.bootstrap_servers        # "127.0.0.1:PORT"   (PLAINTEXT)
        broker.sasl_bootstrap_servers   # "127.0.0.1:PORT"   (SASL_PLAINTEXT, SCRAM-SHA-256/512)
        broker.kill(); broker.restart() # crash + restart on the same ports and log dirs

CLI::

    python tools/kafka/broker.py fetch
    python tools/kafka/broker.py up --dir /tmp/kafka [--scram-user NAME:PASSWORD ...]
    python tools/kafka/broker.py status --dir /tmp/kafka
    python tools/kafka/broker.py down --dir /tmp/kafka

``up`` prints ``KAFKA_BOOTSTRAP_SERVERS=...`` (and ``KAFKA_SASL_BOOTSTRAP_SERVERS=...``) lines, so
``eval "$(python tools/kafka/broker.py up --dir /tmp/kafka)"`` exports them.

Layout of a work dir: ``server.properties``, ``broker.json`` (state: pid, ports; no passwords),
``data/`` (log.dirs and KRaft metadata log), ``logs/server.log`` (log4j), ``logs/stdout.log``
(JVM stdout/stderr), ``logs/format.log`` (storage format output).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TOOLS_DIR.parent.parent
POM_FILE = TOOLS_DIR / "pom.xml"
LOG4J_CONFIG = TOOLS_DIR / "log4j2.properties"
DEFAULT_LIBS_DIR = REPO_ROOT / ".cache" / "kafka" / "libs"
STATE_FILE = "broker.json"

SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
# Characters the StorageTool --add-scram parser cannot carry inside a value.
_SCRAM_FORBIDDEN = set(',[]="\\') | {" ", "\n", "\r", "\t"}

# SerialGC: on this 2-core box G1 setup added ~2 s to every JVM start (4.5 s -> 2.3 s warm).
# Tiered compilation is left on (C1-only starts 0.4 s faster but slows sustained throughput).
DEFAULT_JVM_ARGS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)


class KafkaBrokerError(RuntimeError):
    """The broker could not be fetched, formatted, started or stopped."""


# --------------------------------------------------------------------------- jars


def kafka_version(pom: Path = POM_FILE) -> str:
    """The Kafka version pinned in tools/kafka/pom.xml (``<kafka.version>``)."""
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    node = ET.parse(pom).getroot().find("m:properties/m:kafka.version", ns)
    if node is None or not (node.text or "").strip():
        raise KafkaBrokerError(f"no <kafka.version> property in {pom}")
    return node.text.strip()


def default_libs_dir() -> Path:
    """``$KAFKA_LIBS_DIR`` or ``<repo>/.cache/kafka/libs``."""
    env = os.environ.get("KAFKA_LIBS_DIR")
    return Path(env).expanduser().resolve() if env else DEFAULT_LIBS_DIR


def _kafka_jar(libs_dir: Path, version: str) -> Path:
    return libs_dir / f"kafka_2.13-{version}.jar"


def ensure_jars(cache_dir: Path | str | None = None, *, quiet: bool = True) -> Path:
    """Make sure the broker's runtime jars are in ``cache_dir`` and return that directory.

    Runs Maven (``dependency:copy-dependencies``) only when the Kafka jar of the pinned version
    is missing; the copy goes to a temporary sibling directory that then replaces ``cache_dir``,
    so an interrupted download never leaves a half-filled classpath. A file lock makes
    concurrent callers (e.g. pytest-xdist workers) wait for one download.
    """
    libs = Path(cache_dir).expanduser().resolve() if cache_dir else default_libs_dir()
    version = kafka_version()
    if _kafka_jar(libs, version).is_file():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    ignore = libs.parent / ".gitignore"  # a download cache: keep it out of git, like .pytest_cache
    if not ignore.exists():
        ignore.write_text("# created by tools/kafka/broker.py\n*\n")
    lock_path = libs.parent / f".{libs.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _kafka_jar(libs, version).is_file():  # somebody else fetched while we waited
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaBrokerError("Maven ('mvn') is not on PATH; it is needed once to fetch the Kafka jars")
        tmp = Path(tempfile.mkdtemp(prefix=f".{libs.name}.", dir=libs.parent))
        try:
            cmd = [
                mvn, "-B", "-q" if quiet else "-ntp", "-f", str(POM_FILE),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
            ]
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if res.returncode != 0 or not _kafka_jar(tmp, version).is_file():
                raise KafkaBrokerError(
                    f"maven failed (rc={res.returncode}): {' '.join(cmd)}\n{res.stdout[-4000:]}"
                )
            if libs.exists():
                shutil.rmtree(libs)  # stale version: never mix two Kafka versions on one classpath
            tmp.rename(libs)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaBrokerError("'java' (17+) is not on PATH and JAVA_HOME is not set")
    return java


# --------------------------------------------------------------------------- wire probe


def _kstr(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def _roundtrip(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    """Send one request with a v1 (non-flexible) header, return the response after correlation id."""
    req = struct.pack(">hhi", api_key, version, corr) + _kstr("streamer-probe") + body
    sock.sendall(struct.pack(">i", len(req)) + req)

    def read(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by broker")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", read(4))
    payload = read(size)
    (got,) = struct.unpack(">i", payload[:4])
    if got != corr:
        raise ConnectionError(f"correlation id mismatch {got} != {corr}")
    return payload[4:]


def probe(host: str, port: int, timeout_s: float = 2.0) -> int:
    """Ask the broker for ApiVersions and Metadata; return the number of live brokers it reports.

    0 means the broker answers but has not registered/unfenced itself yet. Raises OSError when
    the port is closed or the broker does not speak Kafka yet.
    """
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        # ApiVersions v0: always supported, no body.
        resp = _roundtrip(sock, 18, 0, 1, b"")
        err, n = struct.unpack(">hi", resp[:6])
        if err != 0:
            raise ConnectionError(f"ApiVersions error {err}")
        ranges = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i: 12 + 6 * i])
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(3, (0, -1))
        # Metadata v4..v8 share a non-flexible layout; Kafka 4 removed v0-v3 (KIP-896).
        version = max(lo, 4)
        if version > min(hi, 8):
            return 1  # cannot parse any version it offers; ApiVersions success must do
        # topics = null (-1: all, there are none at start), allow_auto_topic_creation = false
        resp = _roundtrip(sock, 3, version, 2, struct.pack(">ib", -1, 0))
        (brokers,) = struct.unpack(">i", resp[4:8])  # after throttle_time_ms
        return brokers


def _pick_free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):  # hold all open at once so the ports are distinct
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _new_cluster_id() -> str:
    # Same shape as Kafka's Uuid.randomUuid().toString(): url-safe base64, no padding, no leading '-'.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


# --------------------------------------------------------------------------- process helpers


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # an unreaped zombie (parent gone, PID 1 not reaping) counts as dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _pid_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


_LIVE: "set[KafkaBroker]" = set()  # non-detached brokers this process started


def _kill_live_brokers() -> None:
    for broker in list(_LIVE):
        with contextlib.suppress(Exception):
            broker.kill()


atexit.register(_kill_live_brokers)


# --------------------------------------------------------------------------- broker


class KafkaBroker:
    """One KRaft node (broker+controller) bound to 127.0.0.1, data under ``workdir``.

    Ports are picked once and kept in ``workdir/broker.json``: ``restart()`` (and a later
    ``KafkaBroker`` on the same formatted ``workdir``) reuses the same ports and log dirs.
    SCRAM credentials are written at storage-format time, i.e. only on the first start of
    a fresh ``workdir``.
    """

    def __init__(
        self,
        workdir: Path | str,
        *,
        scram_users: dict[str, str] | None = None,
        libs_dir: Path | str | None = None,
        jvm_args: list[str] | tuple[str, ...] | None = None,
        extra_properties: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = Path(workdir).expanduser().resolve()
        self.scram_users = dict(scram_users or {})
        for name, pw in self.scram_users.items():
            bad = (set(name) | set(pw)) & _SCRAM_FORBIDDEN
            if not name or not pw or bad:
                raise ValueError(f"SCRAM user/password must be non-empty and avoid {sorted(_SCRAM_FORBIDDEN)}")
        self._libs_arg = libs_dir
        self.libs_dir: Path | None = Path(libs_dir).resolve() if libs_dir else None
        self.jvm_args = list(jvm_args) if jvm_args is not None else list(DEFAULT_JVM_ARGS)
        self.extra_properties = dict(extra_properties or {})
        self._proc: subprocess.Popen | None = None
        self._pid: int | None = None
        self.cluster_id: str | None = None
        self.start_seconds: float | None = None  # wall time of the last successful start()
        self._stdout_offset = 0
        self._serverlog_offset = 0

        state = self._read_state()
        if state and self.is_formatted:
            # Formatted work dir: the controller endpoint is baked into the metadata log, and
            # clients/tests expect stable addresses, so keep the recorded ports.
            ports = state["ports"]
            self.plaintext_port: int = ports["plaintext"]
            self.controller_port: int = ports["controller"]
            self.sasl_port: int | None = ports.get("sasl")
            self.cluster_id = state.get("cluster_id")
            if self.scram_users and self.sasl_port is None:
                raise KafkaBrokerError(
                    f"{self.workdir} was formatted without SCRAM users; use a fresh work dir"
                )
            if state.get("pid") and self._is_our_kafka(state["pid"]):
                self._pid = state["pid"]
        else:
            self._assign_ports()

    # ---------------------------------------------------------------- paths / props

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def properties_file(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def state_file(self) -> Path:
        return self.workdir / STATE_FILE

    @property
    def is_formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.plaintext_port}"

    @property
    def sasl_bootstrap_servers(self) -> str | None:
        return f"127.0.0.1:{self.sasl_port}" if self.sasl_port else None

    @property
    def pid(self) -> int | None:
        return self._pid if self.is_running else None

    @property
    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and _pid_alive(self._pid)

    def _assign_ports(self) -> None:
        ports = _pick_free_ports(3 if self.scram_users else 2)
        self.plaintext_port, self.controller_port = ports[0], ports[1]
        self.sasl_port = ports[2] if self.scram_users else None

    def server_properties(self) -> dict[str, Any]:
        p, c, s = self.plaintext_port, self.controller_port, self.sasl_port
        listeners = [f"PLAINTEXT://127.0.0.1:{p}", f"CONTROLLER://127.0.0.1:{c}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{p}"]
        protocol_map = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        props: dict[str, Any] = {
            "process.roles": "broker,controller",
            "node.id": 1,
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{c}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": 1,
            "default.replication.factor": 1,
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": 1,
            "offsets.topic.num.partitions": 1,
            "transaction.state.log.replication.factor": 1,
            "transaction.state.log.min.isr": 1,
            "transaction.state.log.num.partitions": 1,
            "share.coordinator.state.topic.replication.factor": 1,
            "share.coordinator.state.topic.min.isr": 1,
            "group.initial.rebalance.delay.ms": 0,
            # After a SIGKILL the restarted controller still holds the dead incarnation's
            # registration and rejects the new one (DUPLICATE_BROKER_REGISTRATION) until that
            # session expires: 9 s by default, which made kill()+restart() take ~14 s.
            "broker.session.timeout.ms": 3000,
            "broker.heartbeat.interval.ms": 500,
            "num.network.threads": 2,
            "num.io.threads": 4,
            "num.recovery.threads.per.data.dir": 1,
            "log.retention.check.interval.ms": 300000,
        }
        if s is not None:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{s}")
            advertised.append(f"SASL_PLAINTEXT://127.0.0.1:{s}")
            protocol_map.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
            props["sasl.enabled.mechanisms"] = ",".join(SCRAM_MECHANISMS)
            for mech in SCRAM_MECHANISMS:
                props[f"listener.name.sasl_plaintext.{mech.lower()}.sasl.jaas.config"] = (
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                )
        props["listeners"] = ",".join(listeners)
        props["advertised.listeners"] = ",".join(advertised)
        props["listener.security.protocol.map"] = ",".join(protocol_map)
        props.update(self.extra_properties)
        return props

    def _write_properties(self) -> None:
        lines = ["# generated by tools/kafka/broker.py; rewritten on every start"]
        lines += [f"{k}={v}" for k, v in self.server_properties().items()]
        self.properties_file.write_text("\n".join(lines) + "\n")

    # ---------------------------------------------------------------- state

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None

    def _write_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = {
            "pid": self.pid,
            "ports": {"plaintext": self.plaintext_port, "controller": self.controller_port, "sasl": self.sasl_port},
            "bootstrap_servers": self.bootstrap_servers,
            "sasl_bootstrap_servers": self.sasl_bootstrap_servers,
            "sasl_mechanisms": list(SCRAM_MECHANISMS) if self.sasl_port else [],
            "scram_users": sorted(self.scram_users) or (self._read_state() or {}).get("scram_users", []),
            "cluster_id": self.cluster_id,
            "kafka_version": kafka_version(),
            "workdir": str(self.workdir),
            "updated_at": time.time(),
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.state_file)

    def status(self) -> dict[str, Any]:
        st = self._read_state() or {}
        st.update(running=self.is_running, pid=self.pid, workdir=str(self.workdir))
        return st

    def _is_our_kafka(self, pid: int) -> bool:
        if not _pid_alive(pid):
            return False
        cmd = _pid_cmdline(pid)
        return not cmd or ("kafka.Kafka" in cmd and str(self.properties_file) in cmd)

    # ---------------------------------------------------------------- lifecycle

    def _java_base(self) -> list[str]:
        assert self.libs_dir is not None
        return [
            _java(),
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            f"-Dkafka.logs.dir={self.logs_dir}",
            "-cp", str(self.libs_dir / "*"),  # java expands the wildcard itself
        ]

    def _format(self) -> None:
        self.cluster_id = _new_cluster_id()
        cmd = self._java_base() + [
            "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "kafka.tools.StorageTool", "format", "--standalone",
            "-t", self.cluster_id, "-c", str(self.properties_file),
        ]
        for name, pw in self.scram_users.items():
            for mech in SCRAM_MECHANISMS:
                cmd += ["--add-scram", f"{mech}=[name={name},password={pw}]"]
        res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=self.workdir)
        (self.logs_dir / "format.log").write_text(res.stdout)
        if res.returncode != 0:
            raise KafkaBrokerError(f"kafka storage format failed (rc={res.returncode}):\n{res.stdout[-3000:]}")

    def _launch(self, detach: bool) -> None:
        cmd = self._java_base()
        cmd[1:1] = self.jvm_args
        cmd += ["kafka.Kafka", str(self.properties_file)]
        server_log = self.logs_dir / "server.log"
        self._serverlog_offset = server_log.stat().st_size if server_log.exists() else 0
        out = open(self.logs_dir / "stdout.log", "ab")
        self._stdout_offset = out.tell()
        out.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} launching kafka ====\n".encode())
        out.flush()
        # Own session: Ctrl-C in a terminal/pytest does not hit the JVM directly; stop() does.
        # Non-detached brokers die with the Python process (PR_SET_PDEATHSIG), but only when
        # started from the main thread: the signal fires when the *forking thread* exits.
        use_pdeathsig = not detach and threading.current_thread() is threading.main_thread()
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_set_pdeathsig if use_pdeathsig else None,
            )
        finally:
            out.close()
        self._pid = self._proc.pid
        if not detach:
            _LIVE.add(self)  # killed at interpreter exit if still running

    def _log_tail(self, n: int = 40) -> str:
        parts = []
        for name in ("stdout.log", "server.log"):
            try:
                lines = (self.logs_dir / name).read_text(errors="replace").splitlines()
            except OSError:
                continue
            interesting = [l for l in lines if " ERROR " in l or " WARN " in l or "Exception" in l]
            parts.append(f"--- {self.logs_dir / name} (last lines) ---\n" + "\n".join(lines[-n:]))
            if interesting:
                parts.append(f"--- {name}: last WARN/ERROR ---\n" + "\n".join(interesting[-10:]))
        return "\n".join(parts)

    def _bind_failed(self) -> bool:
        """Did the current launch log a listener bind failure? (reads only this launch's output)"""
        text = ""
        for name, offset in (("server.log", self._serverlog_offset), ("stdout.log", self._stdout_offset)):
            try:
                with open(self.logs_dir / name, "rb") as f:
                    f.seek(offset)
                    text += f.read().decode(errors="replace")
            except OSError:
                pass
        return "Address already in use" in text or "BindException" in text

    def _wait_ready(self, deadline: float) -> str | None:
        """Wait until the broker serves metadata. Returns None when ready, or a failure reason."""
        checks = 0
        while time.monotonic() < deadline:
            if not self.is_running:
                return "bind" if self._bind_failed() else "exited"
            checks += 1
            if checks % 5 == 0 and self._bind_failed():
                self.kill()  # Kafka lingers for seconds after a failed bind; do not wait for it
                return "bind"
            try:
                if probe("127.0.0.1", self.plaintext_port, timeout_s=1.0) >= 1:
                    if self.sasl_port is None:
                        return None
                    with socket.create_connection(("127.0.0.1", self.sasl_port), timeout=1.0):
                        return None
            except OSError:
                pass
            time.sleep(0.1)
        return "timeout"

    def start(self, timeout_s: float = 60, *, detach: bool = False) -> "KafkaBroker":
        """Format storage on first use, launch the JVM and wait until it serves metadata.

        ``detach=True`` lets the broker outlive this Python process (used by the CLI ``up``).
        No-op when already running.
        """
        if self.is_running:
            return self
        self.libs_dir = ensure_jars(self._libs_arg)  # one-time Maven fetch: not part of timeout_s
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(exist_ok=True)
        fresh = not self.is_formatted
        attempts = 0
        while True:
            attempts += 1
            if fresh:
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self.data_dir.mkdir()
                self._write_properties()
                self._format()
            else:
                self._write_properties()
            self._write_state()
            self._launch(detach)
            self._write_state()
            reason = self._wait_ready(deadline)
            if reason is None:
                break
            if reason != "bind" or (fresh and attempts >= 5) or time.monotonic() >= deadline:
                tail = self._log_tail()
                self.kill()
                raise KafkaBrokerError(
                    f"kafka broker in {self.workdir} did not become ready ({reason} after "
                    f"{time.monotonic() - t0:.1f}s, ports {self.plaintext_port}/{self.controller_port}/"
                    f"{self.sasl_port})\n{tail}"
                )
            # A port we picked was taken meanwhile. A fresh dir can move to new ports; a formatted
            # one must keep them (restart after a crash): wait for the old sockets to go away.
            self._rotate_log("server.log")
            if fresh:
                self._assign_ports()
            else:
                time.sleep(1.0)
        self.start_seconds = time.monotonic() - t0
        self._write_state()
        return self

    def _rotate_log(self, name: str) -> None:
        path = self.logs_dir / name
        if path.exists():
            path.replace(path.with_name(name + ".failed"))

    def _wait_exit(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        if self._proc is not None:
            try:
                self._proc.wait(timeout=max(timeout_s, 0))
                return True
            except subprocess.TimeoutExpired:
                return False
        while time.monotonic() < deadline:
            if not self.is_running:
                return True
            time.sleep(0.05)
        return not self.is_running

    def _signal(self, sig: int) -> None:
        pid = self._proc.pid if self._proc is not None else self._pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def stop(self, timeout_s: float = 30) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent."""
        if self.is_running:
            self._signal(signal.SIGTERM)
            if not self._wait_exit(timeout_s):
                self._signal(signal.SIGKILL)
                if not self._wait_exit(10):
                    raise KafkaBrokerError(f"kafka pid {self._pid} survived SIGKILL")
        self._forget_process()

    def kill(self) -> None:
        """SIGKILL (crash simulation). Data already fsynced/written stays on disk. Idempotent."""
        if self.is_running:
            self._signal(signal.SIGKILL)
            if not self._wait_exit(10):
                raise KafkaBrokerError(f"kafka pid {self._pid} survived SIGKILL")
        self._forget_process()

    def _forget_process(self) -> None:
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=0)
        self._proc = None
        self._pid = None
        _LIVE.discard(self)
        if self.workdir.exists() and self.state_file.exists():
            self._write_state()

    def restart(self, timeout_s: float = 60, *, graceful: bool = True) -> "KafkaBroker":
        """Stop (or kill when ``graceful=False``) if running, then start on the same ports/log dirs."""
        if graceful:
            self.stop()
        else:
            self.kill()
        return self.start(timeout_s)

    def __enter__(self) -> "KafkaBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (f"KafkaBroker(workdir={str(self.workdir)!r}, bootstrap={self.bootstrap_servers}, "
                f"sasl={self.sasl_bootstrap_servers}, running={self.is_running})")


# --------------------------------------------------------------------------- CLI


def _parse_scram(values: list[str]) -> dict[str, str]:
    users = {}
    for v in values:
        name, sep, pw = v.partition(":")
        if not sep or not name or not pw:
            raise SystemExit(f"--scram-user expects NAME:PASSWORD, got {v!r}")
        users[name] = pw
    return users


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="broker.py", description="Single-node Kafka 4.x (KRaft) on 127.0.0.1")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the broker jars with Maven (cached)")
    f.add_argument("--libs-dir", default=None, help="default: $KAFKA_LIBS_DIR or <repo>/.cache/kafka/libs")
    u = sub.add_parser("up", help="start a detached broker in DIR and print its bootstrap servers")
    u.add_argument("--dir", required=True, type=Path)
    u.add_argument("--scram-user", action="append", default=[], metavar="NAME:PASSWORD",
                   help="adds a SASL_PLAINTEXT listener (SCRAM-SHA-256/512); only on a fresh DIR")
    u.add_argument("--libs-dir", default=None)
    u.add_argument("--timeout", type=float, default=90)
    d = sub.add_parser("down", help="stop the broker in DIR")
    d.add_argument("--dir", required=True, type=Path)
    d.add_argument("--timeout", type=float, default=30)
    s = sub.add_parser("status", help="print the state of DIR as JSON; exit 0 if running, 1 if not")
    s.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)

    try:
        if args.cmd == "fetch":
            t0 = time.monotonic()
            libs = ensure_jars(args.libs_dir, quiet=False)
            print(f"kafka {kafka_version()} jars in {libs} ({time.monotonic() - t0:.1f}s)", file=sys.stderr)
            print(libs)
            return 0
        if args.cmd == "up":
            users = _parse_scram(args.scram_user)
            broker = KafkaBroker(args.dir, scram_users=users or None, libs_dir=args.libs_dir)
            known = set((broker._read_state() or {}).get("scram_users", []))
            if users and broker.is_formatted and set(users) - known:
                print("note: SCRAM users are only created when DIR is first formatted; "
                      f"existing users {sorted(known)} and their passwords are kept", file=sys.stderr)
            was_running = broker.is_running
            broker.start(args.timeout, detach=True)
            msg = "already running" if was_running else f"started in {broker.start_seconds:.1f}s"
            print(f"kafka {msg}: pid {broker.pid}, logs {broker.logs_dir}", file=sys.stderr)
            print(f"KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}")
            if broker.sasl_bootstrap_servers:
                print(f"KAFKA_SASL_BOOTSTRAP_SERVERS={broker.sasl_bootstrap_servers}")
            return 0
        if not (args.dir / STATE_FILE).is_file():
            print(f"no broker state in {args.dir}", file=sys.stderr)
            return 1
        broker = KafkaBroker(args.dir)
        if args.cmd == "down":
            running = broker.is_running
            broker.stop(args.timeout)
            print("stopped" if running else "not running", file=sys.stderr)
            return 0
        if args.cmd == "status":
            st = broker.status()
            print(json.dumps(st, indent=2))
            return 0 if st["running"] else 1
    except (KafkaBrokerError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
