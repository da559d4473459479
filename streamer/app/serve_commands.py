"""``streamer serve``: the read API and live page over streamer's output topics (or a finished run).

``streamer serve`` reads ``headline-assignments`` and ``cluster-events`` from the beginning of
retention into a :class:`~streamer.readmodel.ReadModel` and keeps following them; snapshots come
from the state topic for ``/api/match``. Replicas need no coordination: each reads everything
and a restart rebuilds from Kafka. ``streamer serve --from DIR`` serves a finished run instead
(``make demo``'s ``out/demo``). It listens on ``service.http_host:service.http_port`` and prints
the page's URL once it answers. SIGTERM/SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from streamer.app.options import add_setting_flags
from streamer.config.settings import Settings
from streamer.service.match import MatchParts

__all__ = ["add_commands", "bind_http", "HANDLERS", "run_serve"]


def add_commands(sub: Any) -> None:
    serve = sub.add_parser("serve", help="serve current topics over HTTP (read API + live page) from the output topics")
    serve.add_argument(
        "--from", dest="from_dir", type=Path, default=None,
        help="serve a finished run's folder (events/*.jsonl of make demo-stream, or a streamer cluster report)",
    )
    serve.add_argument("--no-match", action="store_true", help="do not load the model and store: /api/match answers 503")
    add_setting_flags(serve, "bootstrap_servers", "uri", "collection", "model", "http_port", "log_level")


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(run_serve(settings, from_dir=args.from_dir, match=not args.no_match))


HANDLERS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {"serve": _cmd_serve}


def bind_http(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the feed starts (a port in use fails at once).

    Created with ``IPPROTO_TCP`` named: asyncio turns Nagle's algorithm off only on connections
    of sockets whose protocol says TCP, and with it on, a response written as headers then body
    waited for the client's delayed ACK (~40 ms on each answer, 1,000 answers/s at most from 50
    connections).
    """
    from streamer.domain.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"service.http_host/http_port: cannot listen on {host}:{port}: {exc}") from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _quiet_uvicorn() -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn without its own signal handling: ``run_serve`` owns SIGTERM/SIGINT."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

    return _Server


def _connect_match(settings: Settings) -> MatchParts:
    """The model and the store ``/api/match`` uses: the same adapters as ingest (blocking)."""
    from streamer.adapters.embedding import FlagEmbedder
    from streamer.adapters.milvus.store import MilvusStore

    embedder = FlagEmbedder(settings.embedding)
    store = MilvusStore(settings.milvus, embedder.dim)
    try:
        store.open()
    except Exception:
        embedder.close()
        raise

    def close() -> None:
        store.close()
        embedder.close()

    return MatchParts(embedder, store, close)


async def run_serve(
    settings: Settings, *, from_dir: Path | None = None, match: bool = True, stop: asyncio.Event | None = None
) -> int:
    """Feed the read model, serve it until ``stop`` (or a signal); returns the exit code."""
    import uvicorn

    from streamer.adapters.event_files import load_folder
    from streamer.adapters.kafka.feed import KafkaFeed
    from streamer.app.api import ReadApp, create_app
    from streamer.app.serve import follow_snapshots
    from streamer.core.readmodel import ReadModel
    from streamer.observability.logs import get_logger
    from streamer.service.concurrency import BlockingRunner
    from streamer.service.match import Matcher

    log = get_logger("streamer.serve")
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    t = settings.tracking
    model = ReadModel(window_ms=t.window_s * 1000, max_headlines=t.max_window_size)
    runner = BlockingRunner(settings.service.blocking_workers, name="streamer-serve")
    tasks: list[asyncio.Task[None]] = []
    matcher: Matcher | None = None
    sock = bind_http(settings.service.http_host, settings.service.http_port)
    try:
        if from_dir is not None:
            progress = await runner.run(load_folder, from_dir, model)  # before serving: nothing reads yet
            state = ReadApp(model, progress, None, "a finished run's folder has no live snapshot to match against")
        else:
            from streamer.adapters.kafka.client import ensure_topics
            from streamer.adapters.kafka.state import STATE_MAX_BYTES

            k = settings.kafka
            await ensure_topics(
                k,
                {
                    k.assignments_topic: {"partitions": k.partitions},
                    k.cluster_events_topic: {"partitions": k.partitions},
                    t.state_topic: {
                        "partitions": 1,
                        "config": {"cleanup.policy": "compact", "max.message.bytes": str(STATE_MAX_BYTES)},
                    },
                },
            )
            feed = KafkaFeed(k, model)
            matcher = Matcher(settings, runner, lambda: _connect_match(settings)) if match else None
            state = ReadApp(model, feed.progress, matcher, "started with --no-match")
            tasks.append(asyncio.create_task(feed.run(stop), name="read-feed"))
            if matcher is not None:
                tasks.append(asyncio.create_task(follow_snapshots(settings, matcher, runner, stop), name="snapshots"))
        config = uvicorn.Config(
            create_app(state), log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5
        )
        server = _quiet_uvicorn()(config)
        serving = asyncio.create_task(server.serve(sockets=[sock]), name="http")
        host, port = sock.getsockname()[:2]
        while not server.started and not serving.done():
            await asyncio.sleep(0.05)
        url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/"
        log.info("serving", url=url, source=state.progress.source)
        print(f"streamer serve: open {url}  (Ctrl-C stops it)", file=sys.stderr, flush=True)
        stopper = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait([*tasks, serving, stopper], return_when=asyncio.FIRST_COMPLETED)
        stop.set()
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        for task in done:
            if task not in (stopper, serving) and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        log.info("serve stopped cleanly")
        return 0
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if matcher is not None:
            await runner.run(matcher.close)
        runner.shutdown()
        sock.close()
