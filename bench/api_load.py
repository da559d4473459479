"""Read API under load: a 100k-headline window (~1k topics), 50 concurrent clients, events applied meanwhile.

    .venv/bin/python bench/api_load.py [--headlines 100000 --topics 1000 --clients 50 --seconds 20]

1. Builds the event stream of a 24 h window: ``--topics`` created events and one arrival
   event per headline (topic sizes Zipf-like, 60 outlets, event times over 24 h), as JSON.
2. Standalone: decodes and applies it to a fresh :class:`~streamer.readmodel.ReadModel`
   (events/s, the feed's own work: ``decode_event`` + ``apply``).
3. Starts ``streamer.api`` under uvicorn in a child process holding that model, with a
   feeder applying further events (new headlines moving the clock, ~5% re-cluster moves;
   the window stays at 100k by expiry) the way ``KafkaFeed`` does: chunks of 256, a yield
   between chunks, paced at ``--feed-rate`` events/s (0 = as fast as it can). The parent
   builds those events as bytes in a file first, as Kafka hands bytes over: the server's loop
   only decodes and applies them (building them there cost the loop more than serving).
4. 50 clients, each sending its next request when the last answered (wrk when installed,
   Debian's ``wrk``; else aiohttp, whose own CPU then competes with the server), hit
   ``GET /api/topics`` and then ``GET /api/topics/{id}`` (random live ids) for ``--seconds``
   each: p50/p99 latency, requests/s, events/s the child applied meanwhile (from
   /api/status) and its RSS. ``--rate R`` instead sends R requests/s open-loop (latency from
   each request's scheduled time): what polling dashboards see below saturation.
   Everything binds 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from streamer.core.readmodel import ReadModel
from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    ClusterEvent,
    ClusterEventType,
    decode_event,
)
from streamer.domain.headline import Headline

T0 = 1_714_000_000_000
DAY_MS = 86_400_000
OUTLETS = [f"outlet-{i}" for i in range(60)]


def stream(headlines: int, topics: int, *, per_day: int, start: int = 0, seed: int = 7) -> Iterator[tuple[str, bytes]]:
    """(kind, JSON) of ``topics`` created events (when ``start`` is 0) then ``headlines`` arrivals
    numbered from ``start``, ``per_day`` of them per day of event time."""
    rng = random.Random(seed + start)
    cumulative = list(itertools.accumulate(1 / (r + 1) ** 0.8 for r in range(topics)))
    population = range(1, topics + 1)
    if start == 0:
        for cid in range(1, topics + 1):
            event = ClusterEvent.make(
                type=ClusterEventType.CREATED, cluster_id=cid, run_id=1, size=0,
                keywords=[f"kw{cid}", f"story{cid % 97}", "news"], exemplar_id=f"h-{cid}", exemplar_title=f"Story {cid} headline",
            )
            yield "cluster", event.model_dump_json().encode()
    for i in range(start, start + headlines):
        cid = rng.choices(population, cum_weights=cumulative)[0]
        t = T0 + i * DAY_MS // per_day
        h = Headline(id=f"h-{i}", title=f"Headline {i} about story {cid} with a few more words", published_at_ms=t,
                     source=OUTLETS[rng.randrange(len(OUTLETS))])
        reason = AssignmentReason.ARRIVAL
        if start and rng.random() < 0.05:  # a re-cluster move of an earlier headline
            h = Headline(id=f"h-{rng.randrange(i)}", title="moved", published_at_ms=t)
            reason = AssignmentReason.RECLUSTER
        event = AssignmentEvent.for_cluster(headline=h, cluster_id=cid, probability=0.8, run_id=1 + (start > 0), reason=reason)
        yield "assignment", event.model_dump_json().encode()


def apply_all(model: ReadModel, events: list[tuple[str, bytes]]) -> float:
    """Events/s of decoding and applying ``events``."""
    started = time.perf_counter()
    for kind, value in events:
        model.apply(decode_event(kind, value))
    return len(events) / (time.perf_counter() - started)


# -- the server (child process) ---------------------------------------------------------
def serve(args: argparse.Namespace) -> None:
    import uvicorn

    from streamer.adapters.kafka.feed import apply_chunk
    from streamer.app.api import ReadApp, create_app
    from streamer.domain.views import FeedProgress

    model = ReadModel(window_ms=DAY_MS, max_headlines=args.headlines)
    apply_all(model, list(stream(args.headlines, args.topics, per_day=args.headlines)))
    progress = FeedProgress(source="bench", caught_up=True, applied=model.version)
    # The feed's events were built by the parent (as Kafka hands bytes over): the loop only decodes and applies.
    feed_file = open(args.feed_file, "rb")  # noqa: SIM115 (read until the process ends)
    more = ((kind.decode(), value) for kind, value in (line.rstrip(b"\n").split(b"\t", 1) for line in feed_file))

    async def feed() -> None:
        chunk, i = 256, 0
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            apply_chunk(model, progress, itertools.islice(more, chunk))
            i += chunk
            if args.feed_rate:
                await asyncio.sleep(max(0.0, started + i / args.feed_rate - loop.time()))
            else:
                await asyncio.sleep(0)

    async def main() -> None:
        from streamer.app.serve_commands import bind_http

        sock = bind_http("127.0.0.1", args.port)  # as `streamer serve` binds
        server = uvicorn.Server(uvicorn.Config(create_app(ReadApp(model, progress)), log_level="warning", access_log=False,
                                               lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            await asyncio.sleep(0.05)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "feed" from the parent
        feeder = asyncio.create_task(feed())
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # "stop"
        feeder.cancel()
        server.should_exit = True
        await task

    asyncio.run(main())


# -- the clients (parent) ---------------------------------------------------------------
def summary(latencies: list[float], errors: int, seconds: float) -> dict[str, float]:
    """Requests, errors, requests/s and p50/p99 milliseconds of ``latencies`` (seconds)."""
    latencies = sorted(latencies)
    pick = lambda q: round(1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)  # noqa: E731
    return {"requests": len(latencies), "errors": errors, "rps": round(len(latencies) / seconds), "p50_ms": pick(0.5),
            "p99_ms": pick(0.99)}


async def load(port: int, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(1)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}{rng.choice(paths)}") as resp:
                await resp.read()
                errors += resp.status != 200
            latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        await asyncio.gather(*(client(session) for _ in range(clients)))
    return summary(latencies, errors, seconds)


async def load_open(port: int, paths: list[str], rate: float, seconds: float) -> dict[str, float]:
    """Open loop: request i is sent at ``i / rate`` s whether or not earlier ones were answered;
    latency counts from that scheduled time (no coordinated omission). What dashboards polling the
    API see at a given request rate, where the closed loop above measures the saturation queue."""
    import aiohttp

    latencies: list[float] = []
    errors = 0
    rng = random.Random(1)

    async def one(session: aiohttp.ClientSession, due: float) -> None:
        nonlocal errors
        async with session.get(f"http://127.0.0.1:{port}{rng.choice(paths)}") as resp:
            await resp.read()
            errors += resp.status != 200
        latencies.append(time.perf_counter() - due)

    tasks = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            due = start + i / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(session, due)))
        await asyncio.gather(*tasks)
    return summary(latencies, errors, seconds)


_WRK_SCRIPT = """
paths = {%s}
math.randomseed(1)
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRK %%d %%d %%d %%d %%d\\n", summary.requests,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def load_wrk(port: int, paths: list[str], clients: int, seconds: float) -> dict[str, float]:
    """The same closed loop (``clients`` connections, one request outstanding on each) from wrk:
    a C client whose own CPU is a fraction of aiohttp's, so the figures are the server's."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT % ", ".join(json.dumps(p) for p in paths))
    try:
        out = subprocess.run(
            ["wrk", "-t1", f"-c{clients}", f"-d{int(seconds)}s", "--timeout", "10s", "-s", script.name,
             f"http://127.0.0.1:{port}"], capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout
    finally:
        os.unlink(script.name)
    line = next(x for x in out.splitlines() if x.startswith("WRK "))
    requests, errors, p50_us, p99_us, duration_us = (int(v) for v in line.split()[1:])
    return {"requests": requests, "errors": errors, "rps": round(requests / (duration_us / 1e6)),
            "p50_ms": round(p50_us / 1000, 1), "p99_ms": round(p99_us / 1000, 1)}


def status(port: int) -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=30) as resp:
        return json.loads(resp.read())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--headlines", type=int, default=100_000)
    parser.add_argument("--topics", type=int, default=1_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--feed-rate", type=float, default=5_000, help="events/s applied while serving (0 = unpaced)")
    parser.add_argument("--client", choices=("wrk", "aiohttp"), default="wrk" if shutil.which("wrk") else "aiohttp",
                        help="load generator: wrk (Debian's wrk; default when installed) or Python aiohttp clients")
    parser.add_argument("--rate", type=float, default=0,
                        help="open loop at this many requests/s instead of --clients closed-loop clients")
    parser.add_argument("--feed-file", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return 0
    events = list(stream(args.headlines, args.topics, per_day=args.headlines))
    standalone = apply_all(ReadModel(window_ms=DAY_MS, max_headlines=args.headlines), events)
    print(f"standalone: {len(events)} events decoded and applied at {standalone:,.0f} events/s")
    feed_file = REPO / ".cache" / "bench" / "api_load_feed.tsv"
    feed_file.parent.mkdir(parents=True, exist_ok=True)
    feed_events = int((args.feed_rate or 20_000) * (2 * args.seconds + 30))
    with feed_file.open("wb") as out:
        for kind, value in itertools.islice(stream(10 * args.headlines, args.topics, per_day=args.headlines,
                                                   start=args.headlines), feed_events):
            out.write(kind.encode() + b"\t" + value + b"\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--port", str(port), "--headlines", str(args.headlines),
         "--topics", str(args.topics), "--feed-rate", str(args.feed_rate), "--feed-file", str(feed_file)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        assert child.stdout.readline().strip() == "ready"
        idle = status(port)
        ids = [t["id"] for t in json.loads(__import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{port}/api/topics?limit=1000&sort=size").read())["topics"]]
        print(f"window: {idle['headlines']} headlines, {idle['topics']} live topics; RSS {rss_mb(child.pid)} MB")
        child.stdin.write("feed\n")
        child.stdin.flush()
        results = {}
        for name, paths in (("GET /api/topics", ["/api/topics"]), ("GET /api/topics/{id}", [f"/api/topics/{i}" for i in ids])):
            before, started = status(port)["events"], time.perf_counter()
            if args.rate:
                result = asyncio.run(load_open(port, paths, args.rate, args.seconds))
            elif args.client == "wrk":
                result = load_wrk(port, paths, args.clients, args.seconds)
            else:
                result = asyncio.run(load(port, paths, args.clients, args.seconds))
            applied = (status(port)["events"] - before) / (time.perf_counter() - started)
            result |= {"events_per_s": round(applied), "rss_mb": rss_mb(child.pid)}
            results[name] = result
            print(f"{name}: {result}")
        child.stdin.write("stop\n")
        child.stdin.flush()
        child.wait(30)
        out = REPO / ".cache" / "bench" / "api_load.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "standalone_events_per_s": round(standalone), "load": results}, indent=2))
        print(f"raw: {out}")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
