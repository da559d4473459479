#!/usr/bin/env python3
"""Run a real Milvus 2.3 standalone server (PyPI package ``milvus``) for tests and development,
reachable on loopback only.

Why a network namespace
-----------------------
The Milvus 2.3.5 binary binds every gRPC server (proxy 19530, internal 19529, rootcoord 53100,
querycoord 19531, datacoord 13333, querynode 21123, datanode 21124, indexnode 21121) and the
metrics/health HTTP server (9091) to ``*`` (all interfaces). The ``<component>.ip`` keys of
milvus.yaml only change the address a component *registers* in etcd, not the one it listens on
(measured: with ``ip: 127.0.0.1`` on every component ``ss -ltn`` still shows ``*:19530`` etc.).
Only the embedded etcd listens on 127.0.0.1 (fixed 2379/2380, which also collide between two
servers). So configuration alone cannot keep Milvus off non-loopback addresses.

Therefore the server runs in a private network namespace (plus a private mount namespace for its
``/run/milvus`` pid file and ``/tmp/milvus`` scratch files) in which only ``lo`` exists and is up:
nothing outside that namespace can reach any of its ports, and no address needs to be assigned.
A small forwarder process (``server.py _forward``) listens on ``127.0.0.1:<random port>`` in the
host namespace and, having entered the server's namespace with ``setns``, connects each accepted
connection to ``127.0.0.1:19530`` (and, for a second port, ``:9091``) inside it. So in the host
namespace the only sockets are the forwarder's, on 127.0.0.1; each server gets its own namespace,
so the fixed internal ports never collide and several servers can run at once.

Usage as a library::

    with MilvusServer(Path("/tmp/m1")) as srv:        # start() ... stop()
        client = MilvusClient(uri=srv.uri, token=srv.token)

CLI::

    python tools/milvus/server.py up --dir DIR [--auth] [--port N] [--timeout 120]
    python tools/milvus/server.py status --dir DIR
    python tools/milvus/server.py down --dir DIR

Requires Linux, root (or unprivileged user namespaces), util-linux ``unshare``/``mount`` and
iproute2 ``ip``. Only the standard library is imported at module level; ``yaml`` (config
rendering) and ``pymilvus`` (readiness probe) are imported when needed.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import hashlib
import json
import lzma
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["MilvusServer", "MilvusServerError", "ensure_binaries", "render_config"]

# Ports inside the server's private network namespace (Milvus defaults; never visible outside).
INNER_PROXY_PORT = 19530
INNER_METRICS_PORT = 9091
LOOPBACK = "127.0.0.1"
DEFAULT_TOKEN = "root:Milvus"
STATE_FILE = "milvus-server.json"
_CLONE_NEWNET = 0x40000000

# Runs inside the new namespaces (as PID of the Popen, via exec): bring lo up, give Milvus private
# /run/milvus and /tmp/milvus, then exec the server binary.
_NS_BOOTSTRAP = r"""
set -e
ip link set lo up
mkdir -p /run/milvus /tmp/milvus "$MILVUS_NS_RUN" "$MILVUS_NS_TMP"
mount --bind "$MILVUS_NS_RUN" /run/milvus
mount --bind "$MILVUS_NS_TMP" /tmp/milvus
exec "$@"
"""


class MilvusServerError(RuntimeError):
    """Milvus could not be started / stopped."""


# --------------------------------------------------------------------------------------------
# binaries and config
# --------------------------------------------------------------------------------------------

def _milvus_package_dir() -> Path:
    try:
        import milvus  # the PyPI package "milvus" (server binaries), not pymilvus
    except ImportError as exc:  # pragma: no cover - environment problem
        raise MilvusServerError(
            "the PyPI package 'milvus' (==2.3.5, real standalone server) is not installed"
        ) from exc
    return Path(milvus.__file__).resolve().parent


def _cache_root() -> Path:
    env = os.environ.get("STREAMER_MILVUS_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamer" / "milvus-server"


def ensure_binaries() -> Path:
    """Decompress the package's ``data/bin/*.lzma`` once into a shared cache; return the bin dir.

    Keyed by a hash of the compressed files, guarded by a file lock (parallel test runs), and
    published with an atomic rename, so a half-written cache is never used.
    """
    src = _milvus_package_dir() / "data" / "bin"
    files = sorted(p for p in src.iterdir() if p.name.endswith(".lzma"))
    if not files:
        raise MilvusServerError(f"no *.lzma binaries in {src}")
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    root = _cache_root()
    target = root / f"bin-{h.hexdigest()[:16]}"
    if (target / "milvus").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "milvus").is_file():
            return target
        tmp = root / f".tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for p in files:
            out = tmp / p.name[: -len(".lzma")]
            with lzma.open(p, "rb") as fin, open(out, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
            out.chmod(0o755)
        os.rename(tmp, target)
    return target


def _template_text() -> str:
    return (_milvus_package_dir() / "data" / "config.yaml.template").read_text(encoding="utf-8")


def render_config(workdir: Path, *, authorization: bool) -> Path:
    """Write ``workdir/configs/milvus.yaml`` (and glog.conf) from the package's template."""
    import re

    import yaml

    workdir = workdir.resolve()
    logs, data, configs = workdir / "logs", workdir / "data", workdir / "configs"
    for d in (logs, data, configs):
        d.mkdir(parents=True, exist_ok=True)
    values: dict[str, str] = {
        "etcd_log_path": str(logs / "etcd.log"),
        "system_log_path": str(logs),
        "etcd_data_dir": str(data / "etcd.data"),
        "local_storage_dir": str(data),
        "rocksmq_data_dir": str(data / "rocksmq"),
        "authorization_enabled": "true" if authorization else "false",
    }

    def substitute(m: re.Match[str]) -> str:
        key, _, default = m.group(1).strip().partition(":")
        key = key.split("(")[0].strip()
        return values.get(key, default.strip())

    cfg = yaml.safe_load(re.sub(r"\{\{(.*?)\}\}", substitute, _template_text()))
    # Register loopback addresses in etcd (the only interface in the namespace is lo anyway).
    for component in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
                      "dataNode"):
        cfg[component]["ip"] = LOOPBACK
    cfg["etcd"]["endpoints"] = f"{LOOPBACK}:2379"
    cfg["common"]["security"]["authorizationEnabled"] = bool(authorization)
    cfg["log"]["stdout"] = False  # the log goes to logs/milvus.log (log.file.rootPath)
    cfg["natsmq"]["server"]["storeDir"] = str(data / "nats")  # unused (rocksmq) but keep it local
    cfg["natsmq"]["server"]["monitor"]["logFile"] = str(logs / "nats.log")
    # Fast, clean stop/restart for tests. On SIGTERM Milvus 2.3 stops the coordinators first and
    # then the query node waits queryNode.gracefulStopTimeout (default 30 s) for its segments to be
    # moved to another node - there is none in standalone mode, so every stop took 30 s and was
    # then SIGKILLed, leaving etcd sessions behind. After a crash (SIGKILL) the new query node only
    # gets the collections back once the old session's lease expires (common.session.ttl, 30 s
    # by default): 10 s keeps crash-recovery tests short. The lease is renewed in-process
    # (embedded etcd), so a short TTL does not risk spurious expiry.
    cfg["queryNode"]["gracefulStopTimeout"] = 1
    cfg["indexNode"]["gracefulStopTimeout"] = 1
    cfg["common"]["gracefulStopTimeout"] = 20
    cfg["common"]["session"]["ttl"] = 10

    class _Dumper(yaml.SafeDumper):
        pass

    # Milvus reads "key:" (empty) as unset; "null" would be the string "null" for some keys.
    _Dumper.add_representer(type(None), lambda d, _: d.represent_scalar("tag:yaml.org,2002:null", ""))
    path = configs / "milvus.yaml"
    path.write_text(yaml.dump(cfg, Dumper=_Dumper, sort_keys=False), encoding="utf-8")
    shutil.copy(_milvus_package_dir() / "data" / "glog.conf", configs / "glog.conf")
    return path


# --------------------------------------------------------------------------------------------
# process helpers
# --------------------------------------------------------------------------------------------

def _alive(pid: int | None) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] != b"Z"


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _same_process(pid: int | None, start_time: int | None) -> bool:
    """``pid`` is alive and is the process we started (guards against pid reuse)."""
    return bool(pid) and _alive(pid) and (start_time is None or _start_time(pid) == start_time)


def _rss_bytes(pid: int | None) -> int:
    if not pid:
        return 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _signal_group_or_pid(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # we start every process as a session/group leader
            os.killpg(pid, sig)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _wait_gone(pid: int, timeout_s: float, popen: subprocess.Popen[Any] | None = None) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=0.1)
            if popen.returncode is not None:
                return True
        elif not _alive(pid):
            return True
        else:
            time.sleep(0.1)
    return False


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


# --------------------------------------------------------------------------------------------
# the server
# --------------------------------------------------------------------------------------------

class MilvusServer:
    """A Milvus 2.3 standalone server in its own network namespace, reachable at ``uri``.

    ``workdir`` holds configs/, data/ (etcd, rocksmq, segments), logs/ and the state file. The
    host-side port is picked at the first ``start()`` (or given as ``port``) and kept for every
    later ``start()``/``restart()`` of this object, so clients can reconnect to the same URI.
    """

    def __init__(self, workdir: Path | str, *, authorization: bool = False,
                 port: int | None = None, metrics_port: int | None = None,
                 die_with_owner: bool = True) -> None:
        """``die_with_owner``: if the process that called ``start()`` dies without stopping the
        server (e.g. pytest SIGKILLed by a CI timeout), the forwarder stops Milvus. The CLI
        ``up`` turns this off, since its server must outlive it."""
        self.workdir = Path(workdir).resolve()
        self.authorization = authorization
        self.die_with_owner = die_with_owner
        self._port = port
        self._metrics_port = metrics_port
        self._proc: subprocess.Popen[bytes] | None = None
        self._fwd: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._pid_start: int | None = None
        self._fwd_pid: int | None = None
        self._fwd_start: int | None = None
        self.last_start_seconds: float | None = None

    # ---- public properties -------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise MilvusServerError("server was never started: no port yet")
        return self._port

    @property
    def uri(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Milvus' HTTP port (``/healthz``, ``/metrics``) behind the loopback forwarder."""
        if self._metrics_port is None:
            raise MilvusServerError("server was never started: no metrics port yet")
        return f"http://{LOOPBACK}:{self._metrics_port}"

    @property
    def token(self) -> str | None:
        return DEFAULT_TOKEN if self.authorization else None

    @property
    def pid(self) -> int | None:
        """PID of the Milvus process (embedded etcd runs inside it)."""
        return self._pid

    @property
    def forwarder_pid(self) -> int | None:
        return self._fwd_pid

    @property
    def running(self) -> bool:
        return _same_process(self._pid, self._pid_start)

    @property
    def state_path(self) -> Path:
        return self.workdir / STATE_FILE

    def rss_bytes(self) -> int:
        """Resident memory of the Milvus process plus the forwarder."""
        return _rss_bytes(self._pid) + _rss_bytes(self._fwd_pid)

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``pymilvus.MilvusClient``."""
        kw = {"uri": self.uri}
        if self.token:
            kw["token"] = self.token
        return kw

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self, timeout_s: float = 120) -> MilvusServer:
        """Start Milvus and its forwarder; return once ``list_collections()`` answers."""
        if self.running:
            return self
        self._refuse_if_dir_in_use()
        t0 = time.monotonic()
        bin_dir = ensure_binaries()
        render_config(self.workdir, authorization=self.authorization)
        for d in ("run", "tmp", "logs"):
            (self.workdir / d).mkdir(parents=True, exist_ok=True)
        self._spawn_milvus(bin_dir)
        try:
            self._spawn_forwarder()
            self._write_state()
            self._wait_ready(t0 + timeout_s)
        except BaseException:
            self._terminate(grace_s=5)
            raise
        self.last_start_seconds = time.monotonic() - t0
        self._write_state()
        return self

    def stop(self, timeout_s: float = 30) -> None:
        """Graceful stop (SIGTERM, then SIGKILL after ``timeout_s``). Idempotent."""
        self._terminate(grace_s=timeout_s)

    def kill(self) -> None:
        """SIGKILL Milvus and the forwarder at once (crash simulation). Idempotent."""
        self._terminate(grace_s=0)

    def restart(self, timeout_s: float = 120, *, hard: bool = False) -> MilvusServer:
        """Stop (or, with ``hard``, kill) and start again: same data dir, same port."""
        if hard:
            self.kill()
        else:
            self.stop()
        return self.start(timeout_s=timeout_s)

    def __enter__(self) -> MilvusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        port = self._port if self._port is not None else "?"
        return (f"MilvusServer(workdir={str(self.workdir)!r}, port={port}, "
                f"authorization={self.authorization}, running={self.running})")

    # ---- state file (CLI) -------------------------------------------------------------------
    @classmethod
    def from_state(cls, workdir: Path | str) -> MilvusServer:
        """Rebuild a handle from ``workdir``'s state file (e.g. to stop a server started by
        another process)."""
        workdir = Path(workdir).resolve()
        state = json.loads((workdir / STATE_FILE).read_text())
        srv = cls(workdir, authorization=state["authorization"], port=state["port"],
                  metrics_port=state.get("metrics_port"), die_with_owner=False)
        srv._pid, srv._pid_start = state.get("pid"), state.get("pid_start")
        srv._fwd_pid, srv._fwd_start = state.get("forwarder_pid"), state.get("forwarder_start")
        return srv

    def _write_state(self) -> None:
        state = {
            "uri": self.uri,
            "token": self.token,
            "port": self._port,
            "metrics_port": self._metrics_port,
            "authorization": self.authorization,
            "pid": self._pid,
            "pid_start": self._pid_start,
            "forwarder_pid": self._fwd_pid,
            "forwarder_start": self._fwd_start,
            "started_seconds": self.last_start_seconds,
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, self.state_path)

    def _refuse_if_dir_in_use(self) -> None:
        if not self.state_path.exists():
            return
        try:
            other = MilvusServer.from_state(self.workdir)
        except (ValueError, KeyError, OSError):
            return
        if other.running and other._pid != self._pid:
            raise MilvusServerError(
                f"a Milvus server (pid {other._pid}) already runs in {self.workdir}: "
                f"{other.uri}; stop it first (server.py down --dir {self.workdir})")
        if _same_process(other._fwd_pid, other._fwd_start):
            _signal_group_or_pid(other._fwd_pid, signal.SIGKILL)

    # ---- internals --------------------------------------------------------------------------
    def _spawn_milvus(self, bin_dir: Path) -> None:
        for tool in ("unshare", "ip", "mount"):
            if shutil.which(tool) is None:
                raise MilvusServerError(f"'{tool}' not found (util-linux / iproute2 needed)")
        env = os.environ.copy()
        env.update({
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(INNER_METRICS_PORT),
            "MILVUSCONF": str(self.workdir / "configs") + "/",
            "LD_LIBRARY_PATH": ":".join(filter(None, [str(bin_dir),
                                                      os.environ.get("LD_LIBRARY_PATH")])),
            "MILVUS_NS_RUN": str(self.workdir / "run"),
            "MILVUS_NS_TMP": str(self.workdir / "tmp"),
        })
        unshare = ["unshare", "--net", "--mount"]
        if os.geteuid() != 0:
            unshare.insert(1, "--map-root-user")
        cmd = [*unshare, "--", "/bin/sh", "-c", _NS_BOOTSTRAP, "milvus-ns",
               str(bin_dir / "milvus"), "run", "standalone"]
        logs = self.workdir / "logs"
        with open(logs / "milvus-stdout.log", "ab") as out, open(logs / "milvus-stderr.log", "ab") as err:
            banner = f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} start =====\n".encode()
            out.write(banner)
            err.write(banner)
            out.flush()
            err.flush()
            # unshare and sh exec, so this PID is the Milvus process itself (own process group).
            self._proc = subprocess.Popen(cmd, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=err, start_new_session=True)
        self._pid = self._proc.pid
        self._pid_start = _start_time(self._pid)

    def _spawn_forwarder(self) -> None:
        # The namespace exists once unshare has exec'd sh; wait for that (pid's netns differs).
        own_ns = os.stat("/proc/self/ns/net").st_ino
        deadline = time.monotonic() + 10
        while True:
            if not _alive(self._pid):
                raise MilvusServerError(self._failure("Milvus exited while starting"))
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{self._pid}/ns/net").st_ino != own_ns:
                    break
            if time.monotonic() > deadline:
                raise MilvusServerError(self._failure("network namespace was not created"))
            time.sleep(0.02)
        if self._port is None:
            self._port = _free_loopback_port()
        if self._metrics_port is None:
            self._metrics_port = _free_loopback_port()
        ready = self.workdir / "run" / "forwarder.ready"
        with contextlib.suppress(FileNotFoundError):
            ready.unlink()
        cmd = [sys.executable, str(Path(__file__).resolve()), "_forward",
               "--netns-pid", str(self._pid), "--ready-file", str(ready),
               "--owner-pid", str(os.getpid() if self.die_with_owner else 0),
               "--map", f"{self._port}:{INNER_PROXY_PORT}",
               "--map", f"{self._metrics_port}:{INNER_METRICS_PORT}"]
        with open(self.workdir / "logs" / "forwarder.log", "ab") as log:
            self._fwd = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True)
        self._fwd_pid = self._fwd.pid
        self._fwd_start = _start_time(self._fwd_pid)
        deadline = time.monotonic() + 20
        while not ready.exists():
            if self._fwd.poll() is not None:
                raise MilvusServerError(
                    f"forwarder exited ({self._fwd.returncode}) - port {self._port} taken?\n"
                    + _tail(self.workdir / "logs" / "forwarder.log"))
            if time.monotonic() > deadline:
                raise MilvusServerError("forwarder did not become ready in 20 s")
            time.sleep(0.02)

    def _wait_ready(self, deadline: float) -> None:
        import logging

        from pymilvus import MilvusClient  # noqa: PLC0415 - heavy import, only when needed

        # Each refused probe makes pymilvus log a traceback; keep the startup output readable.
        pym_logger = logging.getLogger("pymilvus")
        old_level = pym_logger.level
        pym_logger.setLevel(logging.CRITICAL)
        try:
            self._poll_ready(MilvusClient, deadline)
        finally:
            pym_logger.setLevel(old_level)

    def _poll_ready(self, client_cls: Any, deadline: float) -> None:
        MilvusClient = client_cls  # noqa: N806
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise MilvusServerError(self._failure("Milvus exited while starting"))
            client = None
            probe_s = max(0.5, min(3.0, deadline - time.monotonic()))
            try:
                client = MilvusClient(**self.client_kwargs(), timeout=probe_s)
                client.list_collections(timeout=probe_s)
                return
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
                last = exc
            finally:
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()
            time.sleep(0.5)
        raise MilvusServerError(self._failure(f"Milvus not ready in time (last error: {last!r})"))

    def _failure(self, what: str) -> str:
        logs = self.workdir / "logs"
        main_logs = sorted(logs.glob("standalone*.log"))
        main_tail = _tail(main_logs[-1], 20) if main_logs else ""
        return (f"{what}; workdir {self.workdir}\n--- milvus-stderr.log (tail) ---\n"
                f"{_tail(logs / 'milvus-stderr.log')}\n--- standalone log (tail) ---\n"
                f"{main_tail}")

    def _terminate(self, grace_s: float) -> None:
        pid, fwd = self._pid, self._fwd_pid
        milvus_ours = _same_process(pid, self._pid_start)
        fwd_ours = _same_process(fwd, self._fwd_start)
        # Forwarder first: clients then see "connection refused" exactly as with a dead server.
        if fwd_ours:
            _signal_group_or_pid(fwd, signal.SIGKILL)
            _wait_gone(fwd, 5, self._fwd)
        if milvus_ours:
            if grace_s > 0:
                _signal_group_or_pid(pid, signal.SIGTERM)
                if not _wait_gone(pid, grace_s, self._proc):
                    _signal_group_or_pid(pid, signal.SIGKILL)
            else:
                _signal_group_or_pid(pid, signal.SIGKILL)
            if not _wait_gone(pid, 10, self._proc):
                raise MilvusServerError(f"Milvus pid {pid} did not exit")
        # Reap our children (no zombies), forget the pids.
        for p in (self._proc, self._fwd):
            if p is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=1)
        self._proc = self._fwd = None
        self._pid = self._pid_start = self._fwd_pid = self._fwd_start = None
        if self.state_path.exists() and self._port is not None:
            with contextlib.suppress(OSError):
                self._write_state()


# --------------------------------------------------------------------------------------------
# forwarder: 127.0.0.1:<host port> (host netns) -> 127.0.0.1:<inner port> (Milvus' netns)
# --------------------------------------------------------------------------------------------

def _run_forwarder(netns_pid: int, maps: list[tuple[int, int]], ready_file: Path,
                   owner_pid: int = 0) -> int:
    import asyncio

    milvus_start = _start_time(netns_pid)
    owner_start = _start_time(owner_pid) if owner_pid else None

    listeners = []
    for host_port, _ in maps:  # bound in the host namespace, loopback only
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, host_port))
        except OSError as exc:
            print(f"forwarder: cannot listen on {LOOPBACK}:{host_port}: {exc}", file=sys.stderr)
            return 2
        s.listen(256)
        s.setblocking(False)
        listeners.append(s)
    ns_path = f"/proc/{netns_pid}/ns/net"
    ns_ino = os.stat(ns_path).st_ino
    fd = os.open(ns_path, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:  # sockets made from now on live in Milvus' netns
        err = ctypes.get_errno()
        raise OSError(err, f"setns({ns_path}): {os.strerror(err)}")
    os.close(fd)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(1 << 16):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    def handler(inner_port: int):
        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            try:
                ur, uw = await asyncio.open_connection(LOOPBACK, inner_port)
            except OSError:
                cw.close()
                return
            try:
                await asyncio.gather(pump(cr, uw), pump(ur, cw))
            finally:
                for w in (cw, uw):
                    w.close()
        return handle

    def target_alive() -> bool:
        try:
            return _alive(netns_pid) and os.stat(ns_path).st_ino == ns_ino
        except OSError:
            return False

    async def main() -> None:
        servers = [await asyncio.start_server(handler(inner), sock=s, limit=1 << 20)
                   for s, (_, inner) in zip(listeners, maps)]
        tmp = ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "ports": [p for p, _ in maps]}))
        os.replace(tmp, ready_file)
        while target_alive():  # exit with the server: its ports vanish like a real server's
            if owner_pid and not _same_process(owner_pid, owner_start):
                # Our owner died without stop(): do not leak the server.
                for srv in servers:
                    srv.close()
                if _same_process(netns_pid, milvus_start):
                    _signal_group_or_pid(netns_pid, signal.SIGTERM)
                    if not _wait_gone(netns_pid, 15):
                        _signal_group_or_pid(netns_pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.5)
        for srv in servers:
            srv.close()

    asyncio.run(main())
    return 0


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

def _cli(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start a server in the background (state in DIR)")
    up.add_argument("--dir", required=True, type=Path)
    up.add_argument("--auth", action="store_true", help="enable authorization (root:Milvus)")
    up.add_argument("--port", type=int, default=None, help="host port (default: free port)")
    up.add_argument("--timeout", type=float, default=120)
    for name in ("down", "status"):
        p = sub.add_parser(name)
        p.add_argument("--dir", required=True, type=Path)
    fwd = sub.add_parser("_forward", help=argparse.SUPPRESS)
    fwd.add_argument("--netns-pid", type=int, required=True)
    fwd.add_argument("--ready-file", type=Path, required=True)
    fwd.add_argument("--map", action="append", required=True, help="HOSTPORT:INNERPORT")
    fwd.add_argument("--owner-pid", type=int, default=0)
    args = ap.parse_args(argv)

    if args.cmd == "_forward":
        maps = [tuple(int(x) for x in m.split(":")) for m in args.map]
        return _run_forwarder(args.netns_pid, maps, args.ready_file,  # type: ignore[arg-type]
                              args.owner_pid)

    if args.cmd == "up":
        args.dir.mkdir(parents=True, exist_ok=True)
        port = args.port
        if port is None and (args.dir / STATE_FILE).exists():  # reuse the port of the last run
            with contextlib.suppress(ValueError, KeyError, OSError):
                port = json.loads((args.dir / STATE_FILE).read_text())["port"]
        srv = MilvusServer(args.dir, authorization=args.auth, port=port, die_with_owner=False)
        srv.start(timeout_s=args.timeout)
        # Detach: the Popen objects must not be waited on / closed by interpreter shutdown.
        srv._proc = srv._fwd = None
        print(json.dumps({"uri": srv.uri, "token": srv.token, "pid": srv.pid,
                          "forwarder_pid": srv.forwarder_pid, "metrics_url": srv.metrics_url,
                          "start_seconds": round(srv.last_start_seconds or 0, 2),
                          "rss_mib": round(srv.rss_bytes() / 2**20, 1)}))
        return 0

    state = args.dir / STATE_FILE
    if not state.exists():
        print(f"no {STATE_FILE} in {args.dir}", file=sys.stderr)
        return 1 if args.cmd == "status" else 0
    srv = MilvusServer.from_state(args.dir)
    if args.cmd == "status":
        print(json.dumps({"uri": srv.uri, "running": srv.running, "pid": srv.pid,
                          "rss_mib": round(srv.rss_bytes() / 2**20, 1)}))
        return 0 if srv.running else 1
    srv.stop()
    print(json.dumps({"stopped": str(args.dir.resolve())}))
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
