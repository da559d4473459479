"""pytest plugin: a real Milvus 2.3 standalone server (PyPI ``milvus``) for integration tests.

Register with ``pytest_plugins = ["tests.plugins.milvus_server"]`` (or ``-p tests.plugins.milvus_server``).

Fixtures (session scope, each started lazily on first request, stopped at session end):

* ``milvus_server``           - authorization off, ``token`` is None.
* ``milvus_server_with_auth`` - authorization on, ``token == "root:Milvus"``.

Both yield a :class:`MilvusServer` (``tools/milvus/server.py``): ``uri`` (``http://127.0.0.1:PORT``),
``token``, ``client_kwargs()``, ``restart()``, ``kill()``, ``start()``, ``rss_bytes()``. The server
runs in its own network namespace, reachable only through a forwarder on 127.0.0.1.
If the server cannot start the requesting tests *fail* (never skip), with the server's log tail.

Environment:
  STREAMER_MILVUS_START_TIMEOUT  seconds to wait for readiness (default 120)
  STREAMER_MILVUS_KEEP_DIR       if set, server work dirs are kept under this directory
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_SERVER_PY = Path(__file__).resolve().parents[2] / "tools" / "milvus" / "server.py"


def _load_server_module():
    name = "streamer_tools_milvus_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SERVER_PY)
    assert spec and spec.loader, _SERVER_PY
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_server_module = _load_server_module()
MilvusServer = _server_module.MilvusServer
MilvusServerError = _server_module.MilvusServerError

__all__ = ["MilvusServer", "MilvusServerError", "milvus_server", "milvus_server_with_auth",
           "start_milvus_or_fail"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "integration: talks to a real Kafka broker, Milvus (Lite or server) or the real model"
    )


def _timeout() -> float:
    return float(os.environ.get("STREAMER_MILVUS_START_TIMEOUT", "120"))


def _workdir(factory: pytest.TempPathFactory, name: str) -> Path:
    keep = os.environ.get("STREAMER_MILVUS_KEEP_DIR")
    if keep:
        path = Path(keep) / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return factory.mktemp(name)


def start_milvus_or_fail(workdir: Path, *, authorization: bool = False,
                         timeout_s: float | None = None) -> MilvusServer:
    """Start a server in ``workdir``; on any failure stop it and ``pytest.fail`` loudly."""
    server = MilvusServer(workdir, authorization=authorization)
    try:
        server.start(timeout_s=timeout_s or _timeout())
    except Exception as exc:  # noqa: BLE001 - report every cause the same way
        server.kill()
        pytest.fail(f"could not start the Milvus server in {workdir}: {exc}", pytrace=False)
    return server


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus 2.3.5 standalone server, authorization off."""
    server = start_milvus_or_fail(_workdir(tmp_path_factory, "milvus-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def milvus_server_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServer]:
    """A real Milvus 2.3.5 standalone server, authorization on (token ``root:Milvus``)."""
    server = start_milvus_or_fail(_workdir(tmp_path_factory, "milvus-server-auth"),
                                  authorization=True)
    try:
        yield server
    finally:
        server.stop()
