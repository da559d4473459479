"""The read API and the live page of ``streamer serve`` (FastAPI).

Routes (OpenAPI document at ``/openapi.json``):

- ``GET /api/topics?sort=growth|size|recent&limit=&offset=&q=``: live topics, ranked;
- ``GET /api/topics/{id}?offset=&limit=&bucket_minutes=``: one topic, its headlines newest
  first (paged) and a timeline;
- ``GET /api/headlines/{id}``: a headline's current topic and assignment history;
- ``POST /api/match`` ``{"text": ...}``: the topic a new text would join now (:mod:`streamer.readmatch`);
- ``GET /api/status``, ``/healthz``, ``/readyz`` (ready once the feed caught up);
- ``GET /``: the live page (``streamer/static``: plain HTML/JS/CSS, nothing from elsewhere).

Every handler is a coroutine, so the read model is only touched on the event loop, like the
feed that applies events to it: no locks, and an answer never sees half an event. Errors are
JSON ``{"status", "error", "fields"}``: 404 for an unknown id, 422 naming the field, 503 when
/api/match cannot answer yet. The app holds its collaborators itself (no module state).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from streamer import __version__
from streamer.core.readmodel import ReadModel
from streamer.domain.views import (
    ErrorBody,
    FeedProgress,
    FeedStatus,
    FieldError,
    HeadlineView,
    MatchAnswer,
    MatchRequest,
    TopicDetail,
    TopicList,
    TopicQuery,
    TopicsQuery,
)
from streamer.service.match import Matcher, MatchUnavailable

__all__ = ["ReadApp", "FastReads", "create_app", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_MAX_ANSWERS = 4096
_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown id"},
    422: {"model": ErrorBody, "description": "Invalid input; `fields` names each bad field"},
}


@dataclass
class ReadApp:
    """What the routes read: the model, the feed's progress and the matcher (None: matching off).

    ``answers`` keeps the JSON of read answers for the model's current ``version``: many
    dashboards asking the same question between two applied chunks of events share one
    computation, and an answer is never older than the events applied.
    """

    model: ReadModel
    progress: FeedProgress
    matcher: Matcher | None = None
    match_off_reason: str = "matching is off"
    answers: dict[tuple[Any, ...], bytes] = field(default_factory=dict)
    answers_version: int = -1

    def body(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> bytes | None:
        """The JSON of ``compute()`` (a view, or a JSON-ready document of a view's shape; None for
        an unknown id), computed once per model version."""
        if self.answers_version != self.model.version or len(self.answers) >= _MAX_ANSWERS:
            self.answers.clear()
            self.answers_version = self.model.version
        body = self.answers.get(key)
        if body is None:
            view = compute()
            if view is None:
                return None
            body = self.answers[key] = _encode(view)
        return body

    def answer(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Response:
        """:meth:`body` as a response (404 for an unknown id)."""
        body = self.body(key, compute)
        if body is None:
            return _error(404, f"{key[0]} {key[1]!r} not found")
        return Response(body, media_type="application/json")


Answer = tuple[tuple[Any, ...], Callable[[], Any]]


def _encode(view: Any) -> bytes:
    """A view's JSON, or a document's (orjson; the standard library for what orjson refuses, such
    as an integer beyond 64 bits echoed from a query)."""
    if not isinstance(view, dict):
        return view.model_dump_json().encode()
    try:
        return orjson.dumps(view)
    except TypeError:
        return json.dumps(view, ensure_ascii=False, separators=(",", ":")).encode()


def _topics_answer(model: ReadModel, query: TopicsQuery) -> Answer:
    """The cache key and computation of ``GET /api/topics``."""
    return ("topics", query.sort, query.limit, query.offset, query.q), lambda: model.topics_document(
        sort=query.sort, limit=query.limit, offset=query.offset, q=query.q
    )


def _topic_answer(model: ReadModel, topic_id: int, query: TopicQuery) -> Answer:
    """The cache key and computation of ``GET /api/topics/{id}``."""
    return ("topic", topic_id, query.offset, query.limit, query.bucket_minutes), lambda: model.topic_document(
        topic_id, offset=query.offset, limit=query.limit, bucket_ms=query.bucket_minutes * 60_000
    )


class FastReads:
    """ASGI middleware answering the two polled reads (``GET /api/topics`` and
    ``GET /api/topics/{id}``) before FastAPI's routing and parameter handling.

    Those cost ~200 µs a request in FastAPI (its per-request parameter reflection), more than a
    cached answer itself. Here the query is validated by the same pydantic models the routes
    declare (:class:`TopicsQuery`, :class:`TopicQuery`) and the answer comes from the same
    :meth:`ReadApp.body`, so both paths give the same bytes. Anything else (another route,
    an invalid or blank parameter, an unknown id, a non-canonical id) goes on to FastAPI,
    which gives the errors, their 422/404 bodies and the OpenAPI document.
    """

    def __init__(self, app: Any, state: ReadApp) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = self._fast(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if body is None:
            await self._app(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})

    def _fast(self, scope: dict[str, Any]) -> bytes | None:
        path: str = scope["path"]
        if path == "/api/topics":
            topic_id = None
        elif path.startswith("/api/topics/") and 0 < len(path) - 12 <= 18 and path[12:].isascii() and path[12:].isdigit():
            topic_id = int(path[12:])  # longer ids: FastAPI's answer (int() refuses > 4,300 digits)
        else:
            return None
        raw = scope["query_string"]
        params = dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)) if raw else {}
        if "" in params.values():
            return None  # FastAPI's reading of a blank value decides
        model = self._state.model
        try:
            if topic_id is None:
                key, compute = _topics_answer(model, TopicsQuery.model_validate(params))
            else:
                key, compute = _topic_answer(model, topic_id, TopicQuery.model_validate(params))
        except ValidationError:
            return None
        return self._state.body(key, compute)


def _json(view: Any, status: int = 200) -> Response:
    # pydantic-core serialises the views directly: no second validation pass by FastAPI.
    return Response(view.model_dump_json(), status_code=status, media_type="application/json")


def _error(status: int, message: str, fields: list[FieldError] | None = None) -> Response:
    return _json(ErrorBody(status=status, error=message, fields=fields or []), status)


def create_app(state: ReadApp, *, fast_reads: bool = True) -> FastAPI:
    """The app over ``state``; ``fast_reads`` puts :class:`FastReads` in front of the polled reads."""
    app = FastAPI(
        title="streamer read API",
        version=__version__,
        description="Current news topics from streamer's output topics: ranked topics, their headlines, "
        "a headline's topic, and the topic a new text would join.",
        docs_url=None,  # Swagger UI loads its assets from a CDN; the document itself is /openapi.json
        redoc_url=None,
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> Response:
        fields = [
            FieldError(
                field=".".join(str(p) for p in err["loc"][1:]) or str(err["loc"][0]),
                location=str(err["loc"][0]),
                message=err["msg"],
            )
            for err in exc.errors()
        ]
        names = ", ".join(f.field for f in fields)
        return _error(422, f"invalid input: {names}", fields)

    @app.exception_handler(HTTPException)
    async def _http(_request: Request, exc: HTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.get("/api/topics", response_model=TopicList, responses=_ERRORS, tags=["topics"])
    async def list_topics(query: Annotated[TopicsQuery, Query()]) -> Response:
        """Live topics ranked by growth (last hour minus the hour before), size or most recent headline."""
        return state.answer(*_topics_answer(state.model, query))

    @app.get("/api/topics/{topic_id}", response_model=TopicDetail, responses=_ERRORS, tags=["topics"])
    async def get_topic(topic_id: int, query: Annotated[TopicQuery, Query()]) -> Response:
        """A topic (live, merged or expired) with its current headlines, newest first, and its timeline."""
        return state.answer(*_topic_answer(state.model, topic_id, query))

    @app.get("/api/headlines/{headline_id:path}", response_model=HeadlineView, responses=_ERRORS, tags=["headlines"])
    async def get_headline(headline_id: Annotated[str, PathParam(min_length=1, max_length=512)]) -> Response:
        """A headline of the window: its current topic and the assignment events it had."""
        return state.answer(("headline", headline_id), lambda: state.model.headline(headline_id))

    @app.post(
        "/api/match",
        response_model=MatchAnswer,
        responses={**_ERRORS, 503: {"model": ErrorBody, "description": "No snapshot yet, or model/store not available"}},
        tags=["match"],
    )
    async def match(body: MatchRequest) -> Response:
        """The topic ``text`` would join if it arrived now (same embedder, search and snapshot rule as ingest)."""
        if state.matcher is None:
            return _error(503, state.match_off_reason)
        try:
            answer = await state.matcher.match(body.text, state.model)
        except MatchUnavailable as exc:
            return _error(503, str(exc))
        return _json(answer)

    @app.get("/api/status", response_model=FeedStatus, tags=["service"])
    async def status() -> Response:
        return _json(_status(state))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        ready = state.progress.caught_up
        return JSONResponse({"ready": ready, "events": state.progress.applied}, status_code=200 if ready else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    if fast_reads:
        app.add_middleware(FastReads, state=state)
    return app


def _status(state: ReadApp) -> FeedStatus:
    model, matcher = state.model, state.matcher
    return FeedStatus(
        source=state.progress.source,
        caught_up=state.progress.caught_up,
        events=state.progress.applied,
        version=model.version,
        topics=model.live_topic_count(),
        headlines=model.headline_count,
        now_ms=model.now_ms,
        snapshot_run=matcher.snapshot.snapshot.run_id if matcher and matcher.snapshot else None,
        match=matcher.status if matcher else state.match_off_reason,
    )
