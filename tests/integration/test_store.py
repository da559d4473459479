"""MilvusStore against Milvus Lite and against a real Milvus 2.3 server: the same code, the same contract."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.adapters.milvus.store import MilvusStore
from streamer.config.connections import MilvusSettings
from streamer.domain.errors import SchemaMismatchError, StoreError
from streamer.domain.headline import Headline
from tests.unit.helpers import unit_rows

pytestmark = pytest.mark.integration


@pytest.fixture(params=["lite", "server"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> MilvusSettings:
    name = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "lite":
        return MilvusSettings(uri=str(tmp_path / "lite.db"), collection=name)
    server = request.getfixturevalue("milvus_server")
    return MilvusSettings(uri=server.uri, collection=name, index_type="HNSW")


def _rows(n: int, dim: int = 16, seed: int = 0) -> tuple[list[Headline], np.ndarray]:
    vectors = unit_rows(np.random.default_rng(seed).normal(size=(n, dim)))
    heads = [Headline(id=f"h{i}", title=f"title {i}", published_at_ms=1_000 + i, ingested_at_ms=10_000 + i) for i in range(n)]
    return heads, vectors


def test_upsert_is_idempotent_and_searchable(settings: MilvusSettings) -> None:
    """Re-ingesting the same ids keeps one row each; each vector finds itself first."""
    heads, vectors = _rows(50)
    with MilvusStore(settings, 16) as store:
        try:
            store.upsert(heads, vectors)
            store.upsert(heads[:10], vectors[:10])
            assert store.count() == 50
            ids, sims = store.search(vectors[:5], 3)
            assert [row[0] for row in ids] == [f"h{i}" for i in range(5)]
            assert np.allclose(sims[:, 0], 1.0, atol=1e-4)
        finally:
            store.drop()


def test_fetch_all_since_and_delete(settings: MilvusSettings) -> None:
    """Vectors and fields read back intact; ids_since filters by ingest time; delete removes rows."""
    heads, vectors = _rows(30)
    with MilvusStore(settings, 16) as store:
        try:
            store.upsert(heads, vectors)
            ids, got, rows = store.fetch_all()
            order = np.argsort([int(i[1:]) for i in ids])
            assert np.allclose(got[order], vectors, atol=1e-6)
            assert rows[order[3]]["title"] == "title 3" and rows[order[3]]["published_at"] == 1003
            assert sorted(store.ids_since(10_020)) == sorted(f"h{i}" for i in range(20, 30))
            some = ["h25", "missing", "h3"]
            found, some_vectors, some_rows = store.fetch_rows(some)
            assert found == ["h25", "h3"]
            assert np.allclose(some_vectors, vectors[[25, 3]], atol=1e-6)
            assert some_rows[1]["title"] == "title 3" and "vector" not in some_rows[1]
            assert sorted(store.ids_older_than(1_005)) == [f"h{i}" for i in range(5)]
            store.delete([f"h{i}" for i in range(10)])
            assert store.count() == 20
        finally:
            store.drop()


def test_dimension_mismatch_is_refused(settings: MilvusSettings) -> None:
    """An existing collection with another dimension is an error naming both, never reused."""
    with MilvusStore(settings, 16):
        pass
    try:
        with pytest.raises(SchemaMismatchError, match="16-d vectors but the embedding model makes 8-d"):
            MilvusStore(settings, 8).open()
    finally:
        with MilvusStore(settings, 16) as store:
            store.drop()


def test_unreachable_server_is_a_store_error() -> None:
    """A server URI nobody listens on fails fast with a StoreError naming the operation."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(StoreError, match="connect"):
        MilvusStore(MilvusSettings(uri=f"http://127.0.0.1:{port}", timeout_s=3), 16).open()


def test_token_is_passed_to_servers_that_require_it(milvus_server_with_auth: Any) -> None:
    """With authorization on, the right token works and a wrong one is refused."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    good = MilvusSettings(uri=milvus_server_with_auth.uri, token=milvus_server_with_auth.token, collection=name)
    with MilvusStore(good, 16) as store:
        store.upsert(*_rows(3))
        assert store.count() == 3
        store.drop()
    bad = MilvusSettings(uri=milvus_server_with_auth.uri, token="root:wrong-password", collection=name)
    with pytest.raises(StoreError):
        MilvusStore(bad, 16).open()


def test_lite_search_mirror_answers_like_milvus(tmp_path: Path) -> None:
    """The in-process mirror returns Milvus Lite's own neighbours (ids and cosine similarities), after a
    load of existing rows, upserts that replace vectors, and deletes."""
    from streamer.adapters.milvus.mirror import MirroredStore

    settings = MilvusSettings(uri=str(tmp_path / "lite.db"), collection="mirror")
    heads, vectors = _rows(400, seed=3)
    with MilvusStore(settings, 16) as lite:
        lite.upsert(heads[:250], vectors[:250])  # rows from an earlier life of the service
        mirror = MirroredStore(lite, 16).load()
        assert len(mirror) == 250
        mirror.upsert(heads[250:], vectors[250:])
        moved = unit_rows(np.random.default_rng(9).normal(size=(20, 16)))
        mirror.upsert(heads[:20], moved)  # same ids, new vectors: replaced, not duplicated
        mirror.delete([f"h{i}" for i in range(100, 130)])
        assert len(mirror) == lite.count() == 370
        queries = unit_rows(np.random.default_rng(4).normal(size=(25, 16)))
        got_ids, got_sims = mirror.search(queries, 10)
        want_ids, want_sims = lite.search(queries, 10)
        assert np.allclose(got_sims, want_sims, atol=1e-4)
        for got, want in zip(got_ids, want_ids, strict=True):
            assert got[:9] == want[:9] or set(got) == set(want)  # order may differ on exact ties only
        assert not {f"h{i}" for i in range(100, 130)} & {hid for row in got_ids for hid in row}
        few, few_sims = mirror.search(queries[:2], 500)  # more than stored: padded with -inf
        assert len(few[0]) == 370 and np.isinf(few_sims[:, 370:]).all()


def test_server_recent_overlay_sees_its_own_writes_at_once(milvus_server: Any) -> None:
    """On a Milvus server the overlay's Bounded searches find every row this process just wrote (a
    vector finds itself first, re-upserted vectors are found as they are now, deleted rows are gone),
    and once the rows leave the overlay the server itself answers with the same neighbours."""
    from streamer.adapters.milvus.recent import RecentOverlayStore

    settings = MilvusSettings(uri=milvus_server.uri, collection=f"t_{uuid.uuid4().hex[:10]}")
    heads, vectors = _rows(60, seed=5)
    now = [0.0]
    with MilvusStore(settings, 16) as server:
        try:
            store = RecentOverlayStore(server, keep_s=10.0, clock=lambda: now[0])
            for start in range(0, 60, 20):  # written and searched at once, as ingest does
                store.upsert(heads[start : start + 20], vectors[start : start + 20])
                ids, sims = store.search(vectors[start : start + 20], 3)
                assert [row[0] for row in ids] == [h.id for h in heads[start : start + 20]]
                assert np.allclose(sims[:, 0], 1.0, atol=1e-4)
            moved = unit_rows(np.random.default_rng(8).normal(size=(5, 16)))
            store.upsert(heads[:5], moved)
            store.delete(["h10", "h11"])
            ids, sims = store.search(moved, 3)
            assert [row[0] for row in ids] == [f"h{i}" for i in range(5)] and np.allclose(sims[:, 0], 1.0, atol=1e-4)
            assert not {"h10", "h11"} & {hid for row in store.search(vectors[10:12], 5)[0] for hid in row}
            now[0] = 60.0  # every row is past the overlay: the server's Strong answer and the overlay's agree
            want_ids, want_sims = server.search(vectors[20:30], 5)
            got_ids, got_sims = store.search(vectors[20:30], 5)
            assert len(store) == 0
            assert got_ids == want_ids and np.allclose(got_sims, want_sims, atol=1e-4)
        finally:
            server.drop()
