"""Streaming throughput and latency of `streamer run` on a real local Kafka broker.

1. embed-only: the bundled model encodes N headlines in 64-text micro-batches (the service's
   batch size), two batches at a time as in the service, in this process: texts/s, the ceiling;
2. end-to-end: N headlines are pre-loaded into the input topic, then `streamer run` (Milvus Lite)
   consumes them; throughput = N / (time from the first to the last assignment event). The events
   are read after the service drained the topic, and the CPU time of the service and the broker
   while it did is reported (`cpu.core_s`): on 2 cores they all share the model's cores.
   Measured for --role ingest (the pipeline alone) and --role all (ingest + re-clusterer
   sharing the same 2 cores);
3. latency: a steady 50 msgs/s for --latency-s seconds; per headline, the assignment event's
   Kafka timestamp minus the input message's (both CreateTime, same clock); p50/p95/p99.

Usage: .venv/bin/python bench/stream_e2e.py [--n 6000] [--latency-s 60] [--warmup 1000] [--roles ingest all] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tools"))
from common import CACHE, add_data_argument, uci_rows, use_data  # noqa: E402
from kafka.broker import KafkaBroker  # noqa: E402
from streamer_process import ServiceProcess, settings_env  # noqa: E402


def messages(rows: list[dict[str, str]], prefix: str) -> list[tuple[bytes, bytes]]:
    return [
        (f"{prefix}{r['ID']}".encode(), json.dumps({"id": f"{prefix}{r['ID']}", "title": r["TITLE"], "published_at": int(r["TIMESTAMP"]), "source": r["PUBLISHER"]}).encode())
        for r in rows
    ]


async def produce(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], rate: float | None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        t0 = time.monotonic()
        futures = []
        for i, (key, value) in enumerate(msgs):
            if rate:
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures.append(await producer.send(topic, value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read(bootstrap: str, topic: str, expect: int, timeout_s: float, *, arrivals_only: bool = False) -> list:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list = []
    counted = 0
    deadline = time.monotonic() + timeout_s
    try:
        while counted < expect and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=1000)).values():
                out.extend(batch)
                counted += sum(1 for m in batch if not arrivals_only or b'"reason":"arrival"' in m.value)
    finally:
        await consumer.stop()
    return out


def embed_only(rows: list[dict[str, str]], account: dict | None = None) -> float:
    """The model's best rate on these titles; ``account`` gets the core-seconds it used."""
    from streamer.adapters.embedding import FlagEmbedder
    from streamer.config.sections import EmbeddingSettings

    embedder = FlagEmbedder(EmbeddingSettings())
    texts = [r["TITLE"] for r in rows]
    embedder.encode(texts[:64])  # warm-up
    batches = [texts[start : start + 64] for start in range(0, len(texts), 64)]
    # Two batches at a time, as the service embeds them (kafka.batches_in_flight=3): the model's best rate.
    with ThreadPoolExecutor(2) as pool:
        t0, cpu0 = time.perf_counter(), time.process_time()
        list(pool.map(embedder.encode, batches))
        rate = len(texts) / (time.perf_counter() - t0)
        if account is not None:
            account["core_s"] = round(time.process_time() - cpu0, 1)
    embedder.close()
    return rate


def make_service(workdir: Path, role: str, extra: dict, broker: KafkaBroker) -> tuple[ServiceProcess, dict]:
    run = uuid.uuid4().hex[:6]
    settings = {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 2, "group_id": f"b-{run}", "input_topic": f"in-{run}",
                  "assignments_topic": f"out-{run}", "cluster_events_topic": f"ce-{run}", "dead_letter_topic": f"dlq-{run}"},
        "milvus": {"uri": str(workdir / f"{run}.db")},
        "tracking": {"window_s": 30 * 86400, "state_topic": f"st-{run}"},
        "service": {"log_level": "WARNING"},
    }
    for section, values in extra.items():
        settings.setdefault(section, {}).update(values)
    return ServiceProcess(settings_env(settings), workdir / f"{run}.log", ["--role", role]), settings


def run_service(broker: KafkaBroker, workdir: Path, role: str, extra: dict) -> tuple[ServiceProcess, dict]:
    svc, settings = make_service(workdir, role, extra, broker)
    return svc.start(), settings


class CpuAccount:
    """Core-seconds each process used between ``start`` and ``stop``: where the two cores went."""

    def __init__(self, **pids: int | None) -> None:
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}

    def _now(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, proc in self._procs.items():
            t = proc.cpu_times()
            out[name] = t.user + t.system
            # child processes: the window process (tracking.window_process); milvus-lite 3.x has
            # none, its server runs in the service's process
            kids = sum(sum(c.cpu_times()[:2]) for c in proc.children(recursive=True))
            if kids:
                out[f"{name}_children"] = kids
        return out

    def start(self) -> None:
        self._t0, self._wall0 = self._now(), time.monotonic()

    def stop(self) -> dict:
        end, wall = self._now(), time.monotonic() - self._wall0
        used = {name: round(end[name] - self._t0.get(name, 0.0), 1) for name in end}
        return {"wall_s": round(wall, 1), "core_s": used, "cores_busy": round(sum(used.values()) / wall, 2)}


def processed(svc: ServiceProcess) -> int:
    """Headlines the service has processed, from its own counter."""
    prefix = "streamer_messages_processed_total{"
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in svc.metrics().splitlines() if line.startswith(prefix)))


def throughput(broker: KafkaBroker, workdir: Path, rows: list[dict[str, str]], role: str, extra: dict | None = None) -> dict:
    """The input topic is filled first and the events are read only after the service drained it, so
    neither the load generator nor the reader shares the cores with the service while it is timed."""
    from streamer.adapters.kafka.client import ensure_topics
    from streamer.config.connections import KafkaSettings

    svc, s = make_service(workdir, role, extra or {}, broker)
    k = s["kafka"]
    asyncio.run(ensure_topics(KafkaSettings(bootstrap_servers=broker.bootstrap_servers), {k["input_topic"]: {"partitions": k["partitions"]}}))
    asyncio.run(produce(broker.bootstrap_servers, k["input_topic"], messages(rows, "t-"), None))
    svc.start()
    assert svc.proc is not None
    cpu = CpuAccount(service=svc.proc.pid, broker=broker.pid)
    try:
        deadline = time.monotonic() + 900
        while processed(svc) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        cpu.start()
        # Once a second: each poll renders the service's whole /metrics page on its own cores
        # (at 5 Hz that was ~1% of the service's CPU in a py-spy profile of the drain).
        while processed(svc) < len(rows) and time.monotonic() < deadline:
            time.sleep(1.0)
        cpu_used = cpu.stop()
        stages = stage_summary(svc.metrics())
    finally:
        svc.terminate()
    events = asyncio.run(read(broker.bootstrap_servers, k["assignments_topic"], len(rows), 120, arrivals_only=True))
    arrivals = [e for e in events if b'"reason":"arrival"' in e.value]
    stamps = sorted(e.timestamp for e in arrivals)
    # first to last event: the steady-state rate, without model load and consumer join
    return {"role": role, "n": len(arrivals), "msgs_per_s": round((len(arrivals) - 1) / ((stamps[-1] - stamps[0]) / 1000), 1),
            "stages": stages, "cpu": cpu_used}


def stage_summary(metrics_text: str) -> dict:
    """Mean seconds per batch of each pipeline stage, from the service's own histogram sums and counts."""
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    for line in metrics_text.splitlines():
        for suffix, into in (("_sum", sums), ("_count", counts)):
            prefix = f"streamer_stage_duration_seconds{suffix}{{"
            if line.startswith(prefix):
                stage = line[len(prefix):].split('"')[1]
                into[stage] = float(line.rsplit(" ", 1)[1])
    return {stage: {"batches": int(counts[stage]), "mean_ms": round(1000 * sums[stage] / counts[stage], 1)}
            for stage in sorted(sums) if counts.get(stage)}


def latency(broker: KafkaBroker, workdir: Path, rows: list[dict[str, str]], rate: float, role: str, extra: dict) -> dict:
    svc, s = run_service(broker, workdir, role, extra)
    k = s["kafka"]
    try:
        msgs = messages(rows, "l-")
        asyncio.run(produce(broker.bootstrap_servers, k["input_topic"], msgs, rate))
        events = asyncio.run(read(broker.bootstrap_servers, k["assignments_topic"], len(msgs), 300, arrivals_only=True))
        inputs = asyncio.run(read(broker.bootstrap_servers, k["input_topic"], len(msgs), 60))
        stages = stage_summary(svc.metrics())
    finally:
        svc.terminate()
    sent = {m.key: m.timestamp for m in inputs}
    pairs = sorted((sent[e.key], e.timestamp - sent[e.key]) for e in events if b'"reason":"arrival"' in e.value and e.key in sent)
    lat = np.array([latency for _, latency in pairs], dtype=float)
    t0 = pairs[0][0] if pairs else 0
    slowest = sorted(pairs, key=lambda p: -p[1])[:10]
    # Every arrival's (send time, latency) and the service's log, to line spikes up with what it did.
    (CACHE / f"latency_{role}_pairs.json").write_text(json.dumps([[t - t0, ms] for t, ms in pairs]))
    shutil.copyfile(svc.log_path, CACHE / f"latency_{role}_service.log")
    # Per 30 s of sending: a long run shows what a short one hides (Lite flushes, a growing window).
    periods: dict[int, list[float]] = {}
    for t, ms in pairs:
        periods.setdefault(int((t - t0) / 30_000), []).append(ms)
    by_period = [{"from_s": 30 * k, "p50_ms": float(np.percentile(v, 50)), "p99_ms": float(np.percentile(v, 99)),
                  "max_ms": float(max(v))} for k, v in sorted(periods.items())]
    return {"role": role, "rate_msgs_per_s": rate, "n": int(lat.size), "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()),
            "stages": stages, "slowest_at_s": [[round((t - t0) / 1000, 1), ms] for t, ms in slowest],
            "by_30s": by_period}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--latency-s", type=float, default=60)
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput runs")
    parser.add_argument("--latency-roles", nargs="*", default=["all"], help="roles to measure latency for (none: skip)")
    parser.add_argument("--warmup", type=int, default=1000, help="headlines through an unmeasured service first (0 = none)")
    parser.add_argument("--roles", nargs="+", default=["ingest", "all"], help="roles to measure throughput for")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="service settings for the throughput and latency runs, e.g. kafka.compression_type=gzip")
    args = parser.parse_args()
    use_data(args.data)
    overrides: dict[str, dict[str, str]] = {}
    for item in args.set:
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        overrides.setdefault(section, {})[key] = value
    rows = uci_rows(0, args.n)
    workdir = CACHE / "stream_e2e"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    model_cpu: dict = {}
    result: dict = {} if args.latency_only else {"embed_only_msgs_per_s": round(embed_only(rows, model_cpu), 1)}
    if model_cpu:
        result["embed_only_core_s"] = model_cpu["core_s"]
    print(json.dumps(result), flush=True)
    with KafkaBroker(workdir / "kafka") as broker:
        broker.start()
        if not args.latency_only:
            # the same model with the (idle) broker up: the conditions the service runs in
            result["embed_only_broker_up_msgs_per_s"] = round(embed_only(rows, model_cpu), 1)
            result["embed_only_broker_up_core_s"] = model_cpu["core_s"]
            # Ratios are against the better of the two: the machine is noisy, and a low baseline flatters.
            baseline = max(result["embed_only_msgs_per_s"], result["embed_only_broker_up_msgs_per_s"])
            if args.warmup:
                # A fresh JVM compiles the broker's request paths during its first seconds of traffic
                # (it used 1.0 core-s per 3,000 headlines cold, 0.7 warm); a deployed broker is warm.
                throughput(broker, workdir, uci_rows(args.n, args.warmup), "ingest", overrides)
        for role in () if args.latency_only else args.roles:
            key = f"e2e_{role}" if f"e2e_{role}" not in result else f"e2e_{role}_again"
            result[key] = throughput(broker, workdir, rows, role, overrides)
            result[key.replace("e2e_", "ratio_")] = round(result[key]["msgs_per_s"] / baseline, 3)
            # The best ratio this run's CPU allows even with every wait hidden: the model's own
            # core-seconds for these headlines over what the service and the broker spent on them.
            spent = result[key]["cpu"]["core_s"]
            result[key.replace("e2e_", "cpu_bound_ratio_")] = round(
                min(result["embed_only_core_s"], result["embed_only_broker_up_core_s"])
                / (spent.get("service", 0.0) + spent.get("service_children", 0.0) + spent.get("broker", 0.0)), 3)
            print(json.dumps(result), flush=True)
        lat_rows = uci_rows(args.n + args.warmup, int(args.rate * args.latency_s))
        for role in args.latency_roles:
            extra = {**overrides, "service": {**overrides.get("service", {}), "log_level": "INFO"}}
            result[f"latency_{role}"] = latency(broker, workdir, lat_rows, args.rate, role, extra)
            print(json.dumps(result), flush=True)
    print(json.dumps(result))
    (CACHE / "stream_e2e.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
