"""The real-Milvus-server fixtures (tests/plugins/milvus_server.py) against Milvus 2.3.5.

Run: .venv/bin/python -m pytest -p tests.plugins.milvus_server \
         tests/integration/test_milvus_server_fixture.py -q
"""

from __future__ import annotations

import socket
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from tests.plugins.milvus_server import MilvusServer, start_milvus_or_fail

pytestmark = pytest.mark.integration

DIM = 16


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    vecs = rng.standard_normal((n, DIM)).astype(np.float32)
    return [{"id": f"doc-{i}", "vec": vecs[i].tolist(), "n": i} for i in range(n)]


def _create(client: MilvusClient, name: str, index_type: str = "HNSW") -> None:
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("n", DataType.INT64)
    index_params = client.prepare_index_params()
    params = {"M": 16, "efConstruction": 64} if index_type == "HNSW" else {}
    index_params.add_index(field_name="vec", index_type=index_type, metric_type="COSINE",
                           params=params)
    client.create_collection(name, schema=schema, index_params=index_params)


def _name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


def _count(client: MilvusClient, name: str) -> int:
    res = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(res[0]["count(*)"])


@pytest.mark.parametrize("index_type", ["HNSW", "FLAT"])
def test_upsert_search_query_delete(milvus_server: MilvusServer, index_type: str) -> None:
    assert milvus_server.uri.startswith("http://127.0.0.1:")
    assert milvus_server.token is None
    client = MilvusClient(**milvus_server.client_kwargs())
    name = _name()
    try:
        _create(client, name, index_type)
        rows = _rows(300)
        assert client.upsert(name, rows)["upsert_count"] == 300
        # Upserting existing primary keys replaces them: still 300 entities.
        rows[3]["n"] = 3000
        client.upsert(name, rows[:10])
        assert _count(client, name) == 300

        hits = client.search(name, data=[rows[3]["vec"], rows[42]["vec"]], limit=3,
                             output_fields=["n"], consistency_level="Strong",
                             search_params={"metric_type": "COSINE"})
        assert [h[0]["id"] for h in hits] == ["doc-3", "doc-42"]
        assert hits[0][0]["distance"] == pytest.approx(1.0, abs=1e-4)  # COSINE: similarity
        assert hits[0][0]["entity"]["n"] == 3000

        got = client.query(name, filter='id in ["doc-1", "doc-2"]', output_fields=["n"],
                           consistency_level="Strong")
        assert sorted(r["n"] for r in got) == [1, 2]

        client.delete(name, ids=["doc-1"])
        client.delete(name, filter='id in ["doc-2"]')
        assert client.query(name, ids=["doc-1", "doc-2"], consistency_level="Strong") == []

        it = client.query_iterator(name, batch_size=64, filter='id != ""', output_fields=["n"])
        seen = 0
        while batch := it.next():
            seen += len(batch)
        it.close()
        assert seen == 298

        desc = client.describe_collection(name)
        assert {f["name"] for f in desc["fields"]} == {"id", "vec", "n"}
    finally:
        client.drop_collection(name)
        assert name not in client.list_collections()
        client.close()


def test_auth_token(milvus_server_with_auth: MilvusServer) -> None:
    srv = milvus_server_with_auth
    assert srv.token == "root:Milvus"
    client = MilvusClient(uri=srv.uri, token=srv.token)
    name = _name()
    try:
        _create(client, name)
        rows = _rows(50, seed=1)
        client.upsert(name, rows)
        hits = client.search(name, data=[rows[7]["vec"]], limit=1, consistency_level="Strong")
        assert hits[0][0]["id"] == "doc-7"
    finally:
        client.drop_collection(name)
        client.close()
    for bad in ("root:wrong-password", "nobody:Milvus", ""):
        with pytest.raises(MilvusException):
            MilvusClient(uri=srv.uri, token=bad, timeout=10).list_collections()


def test_restart_and_kill_keep_data(tmp_path: Path) -> None:
    srv = start_milvus_or_fail(tmp_path / "milvus")
    try:
        uri = srv.uri
        client = MilvusClient(uri=uri)
        name = _name()
        _create(client, name)
        rows = _rows(120, seed=2)
        client.upsert(name, rows)
        assert _count(client, name) == 120
        client.close()

        srv.restart()  # graceful stop + start: same data dir, same port
        assert srv.uri == uri
        client = MilvusClient(uri=uri)
        client.load_collection(name)
        assert _count(client, name) == 120
        client.upsert(name, _rows(130, seed=2)[120:])  # written after the restart
        client.close()

        srv.kill()  # crash: SIGKILL, nothing flushed on purpose
        assert not srv.running
        with pytest.raises(OSError):  # the port is gone, as with a dead server
            socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
        srv.start()
        assert srv.uri == uri
        client = MilvusClient(uri=uri)
        client.load_collection(name)
        assert _count(client, name) == 130
        hits = client.search(name, data=[rows[11]["vec"]], limit=1, consistency_level="Strong")
        assert hits[0][0]["id"] == "doc-11"
        client.close()
    finally:
        srv.stop()
    assert not srv.running
    srv.stop()  # idempotent


def test_listens_on_loopback_only(milvus_server: MilvusServer) -> None:
    pids = {milvus_server.pid, milvus_server.forwarder_pid}
    assert None not in pids
    # Host namespace: our only listening sockets are the forwarder's, all on 127.0.0.1.
    out = subprocess.run(["ss", "-H", "-ltnp"], check=True, capture_output=True,
                         text=True).stdout
    ours = [line for line in out.splitlines() if any(f"pid={p}," in line for p in pids)]
    assert ours, out
    for line in ours:
        local = line.split()[3]
        assert local.startswith("127.0.0.1:"), line
        assert f"pid={milvus_server.forwarder_pid}," in line, line
    # Milvus' own namespace has no interface but lo, so its "*" listeners are loopback-only.
    with open(f"/proc/{milvus_server.pid}/net/dev") as f:
        ifaces = {line.split(":")[0].strip() for line in f.readlines()[2:]}
    assert ifaces == {"lo"}
