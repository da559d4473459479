"""The read API's fast path (streamer.app.api.FastReads) answers exactly as FastAPI's routes do.

Both apps are called in-process through ASGI (no server): for valid, invalid, blank, repeated
and unknown parameters, unknown and non-canonical ids, the fast path must give the same status,
content type and bytes as the routes it stands in front of.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from streamer.app.api import FastReads, ReadApp, create_app
from streamer.core.readmodel import ReadModel
from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    ClusterEvent,
    ClusterEventType,
)
from streamer.domain.headline import Headline
from streamer.domain.views import FeedProgress

T0 = 1_700_000_000_000

URLS = [
    "/api/topics",
    "/api/topics?sort=size&limit=2",
    "/api/topics?sort=recent&offset=1&q=Zoo",
    "/api/topics?limit=2&limit=3",  # repeated: the last one counts
    "/api/topics?sort=nonsense",
    "/api/topics?limit=0",
    "/api/topics?limit=",
    "/api/topics?q=" + "x" * 201,
    "/api/topics?unknown=1",
    "/api/topics/1",
    "/api/topics/2?limit=1&offset=1&bucket_minutes=30",
    "/api/topics/007",  # no topic 7
    "/api/topics/001",
    "/api/topics/99",
    "/api/topics/-1",
    "/api/topics/abc",
    "/api/topics/1?bucket_minutes=0",
    "/api/topics/1?limit=x",
    "/api/topics/1?offset=18446744073709551616",  # beyond 64 bits: echoed in the answer
    "/api/topics/" + "9" * 4301,  # beyond int()'s digit limit
]


def _model() -> ReadModel:
    m = ReadModel()
    m.apply(ClusterEvent.make(type=ClusterEventType.CREATED, cluster_id=1, run_id=1, size=3, keywords=["zoo", "penguins"],
                              exemplar_id="h0", exemplar_title="Penguins escape"))
    for i in range(9):
        headline = Headline(id=f"h{i}", title=f"title {i}", published_at_ms=T0 + i * 600_000, source=f"s{i % 2}")
        m.apply(AssignmentEvent.for_cluster(headline=headline, cluster_id=1 + i % 3, probability=0.9, run_id=1, reason=AssignmentReason.ARRIVAL))
    return m


def _get(app: Any, url: str) -> tuple[int, str, bytes]:
    path, _, query = url.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": [(b"host", b"test")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = dict(start["headers"])
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers[b"content-type"].decode(), body


@pytest.mark.parametrize("url", URLS)
def test_the_fast_path_answers_like_the_routes(url: str) -> None:
    model = _model()
    state = ReadApp(model, FeedProgress(source="test", caught_up=True))
    fast = _get(create_app(state, fast_reads=True), url)
    state.answers.clear()
    slow = _get(create_app(state, fast_reads=False), url)
    assert fast == slow
    assert fast[0] in (200, 404, 422)  # never a 500
    if fast[0] == 200:
        assert json.loads(fast[2])  # a real answer, not an empty body


def test_the_fast_path_never_serves_an_answer_older_than_the_model() -> None:
    model = _model()
    app = create_app(ReadApp(model, FeedProgress(source="test", caught_up=True)))
    before = json.loads(_get(app, "/api/topics/1")[2])["size"]
    model.apply(AssignmentEvent.for_cluster(headline=Headline(id="new", title="t", published_at_ms=T0), cluster_id=1,
                                            probability=0.9, run_id=1, reason=AssignmentReason.ARRIVAL))
    assert json.loads(_get(app, "/api/topics/1")[2])["size"] == before + 1


def test_the_fast_path_takes_valid_reads_and_leaves_the_rest_to_fastapi() -> None:
    state = ReadApp(_model(), FeedProgress(source="test", caught_up=True))
    fast = FastReads(None, state)

    def taken(url: str) -> bool:
        path, _, query = url.partition("?")
        return fast._fast({"type": "http", "method": "GET", "path": path, "query_string": query.encode()}) is not None

    valid = {"/api/topics", "/api/topics?sort=size&limit=2", "/api/topics?sort=recent&offset=1&q=Zoo",
             "/api/topics?limit=2&limit=3", "/api/topics?unknown=1", "/api/topics/1",
             "/api/topics/2?limit=1&offset=1&bucket_minutes=30", "/api/topics/001",
             "/api/topics/1?offset=18446744073709551616"}
    assert {url for url in URLS if taken(url)} == valid


def test_the_api_socket_answers_without_nagle_delays() -> None:
    """Connections accepted on ``streamer serve``'s socket have TCP_NODELAY (asyncio sets it only
    when the listening socket says TCP): otherwise every answer written in two parts waited for
    the client's delayed ACK, ~40 ms."""
    import socket

    from streamer.app.serve_commands import bind_http

    async def main() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            accepted.set_result(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = bind_http("127.0.0.1", 0)
        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            nodelay = await asyncio.wait_for(accepted, 10)
            writer.close()
        return nodelay

    assert asyncio.run(main()) == 1
