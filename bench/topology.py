"""The split topology against `--role all`: same replay, same Milvus server, one run.

Starts a Kafka broker (tools/kafka) and a Milvus 2.3 server (tools/milvus), then replays the
first ``--rows`` UCI headlines at ``--rate`` headlines/s twice:

1. through one `streamer run --role all`;
2. through 2 `--role ingest` replicas, a `--role recluster` leader and a standby: the leader is
   SIGKILLed at 40% of the replay, one ingest replica at 70%.

Each replay ends when every headline has an arrival event and a re-clustering run has taken
every headline in. Prints one JSON object:

- ``headlines``; ``lost``: headlines with no arrival event (split);
- ``duplicate_arrival_events``: distinct arrival event ids beyond one per headline (split);
- ``ids_reused``: cluster ids created twice (two ``created`` events naming different runs or
  exemplars), plus run ids published under two leader epochs (split);
- ``failovers`` and ``failover_s``: from the SIGKILL to the standby reporting itself leader;
- ``live_bcubed_f1_split`` / ``live_bcubed_f1_all``: B-cubed F1 of the cluster each headline was
  last published with, against STORY (noise as singletons);
- ``stage_ms_all`` / ``stage_ms_split_ingest``: mean milliseconds per ingest stage per batch
  (embed, search, produce, ...) over the steady part, from the processes' ``/metrics``;
- ``p99_arrival_latency_ms_split``: arrival event's Kafka timestamp minus the input message's, over
  the headlines sent before the first SIGKILL (steady state); ``arrival_latency_ms_split_*`` give
  p50/p99 for those and for every headline (through both failovers: a killed replica's
  partitions wait for the consumer group's session timeout and rebalance).

Usage: PYTHONPATH=. .venv/bin/python bench/topology.py [--rows 3000] [--rate 50] [--data DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))
from common import CACHE, add_data_argument, milvus_server_class, uci_rows, use_data  # noqa: E402
from id_audit import audit_ids  # noqa: E402
from kafka.broker import KafkaBroker  # noqa: E402
from streamer_process import ServiceProcess, settings_env  # noqa: E402

from streamer.core.quality import bcubed, noise_as_singletons  # noqa: E402
from streamer.domain.events import AssignmentEvent, ClusterEvent  # noqa: E402

MilvusServer = milvus_server_class()


def messages(rows: list[dict[str, str]]) -> list[tuple[bytes, bytes]]:
    return [
        (f"uci-{r['ID']}".encode(), json.dumps({"id": f"uci-{r['ID']}", "title": r["TITLE"],
                                                 "published_at": int(r["TIMESTAMP"]), "source": r["PUBLISHER"]}).encode())
        for r in rows
    ]


async def produce(bootstrap: str, topic: str, msgs: list[tuple[bytes, bytes]], rate: float, at: dict[float, Any]) -> None:
    """At ``rate``/s; ``at`` maps a share of the replay (0.4) to a callable run when it is reached."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
    await producer.start()
    try:
        t0 = time.monotonic()
        futures = []
        pending = sorted(at.items())
        for i, (key, value) in enumerate(msgs):
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while pending and i >= pending[0][0] * len(msgs):
                pending.pop(0)[1]()
            futures.append(await producer.send(topic, value=value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[Any] = []
    try:
        while batches := await consumer.getmany(timeout_ms=3000):
            for batch in batches.values():
                out.extend(batch)
    finally:
        await consumer.stop()
    return out


def settings(broker: KafkaBroker, milvus: Any) -> dict[str, dict[str, Any]]:
    run = uuid.uuid4().hex[:6]
    return {
        "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 2, "group_id": f"t-{run}",
                  "input_topic": f"in-{run}", "assignments_topic": f"out-{run}", "cluster_events_topic": f"ce-{run}",
                  "dead_letter_topic": f"dlq-{run}"},
        "milvus": {"uri": milvus.uri, "collection": f"topology_{run}"},
        "tracking": {"window_s": 30 * 86400, "state_topic": f"st-{run}", "arrivals_topic": f"arr-{run}"},
        "service": {"log_level": "INFO"},
    }


def wait(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out after {timeout_s}s waiting for {what}")


class Replay:
    """One replay through a set of service processes, and what the output topics held after it."""

    def __init__(self, workdir: Path, broker: KafkaBroker, milvus: Any, rows: list[dict[str, str]]) -> None:
        self.workdir, self.broker, self.rows = workdir, broker, rows
        self.settings = settings(broker, milvus)
        self.procs: list[ServiceProcess] = []
        self.failover_s: list[float] = []

    def start(self, role: str, name: str) -> ServiceProcess:
        proc = ServiceProcess(settings_env(self.settings), self.workdir / f"{name}.log", ["--role", role]).start(
            ready_timeout_s=300
        )
        self.procs.append(proc)
        return proc

    def run(self, rate: float, at: dict[float, Any] | None = None) -> tuple[list[AssignmentEvent], list[ClusterEvent], list[Any]]:
        k = self.settings["kafka"]
        msgs = messages(self.rows)
        asyncio.run(produce(self.broker.bootstrap_servers, k["input_topic"], msgs, rate, at or {}))
        ids = {key.decode() for key, _ in msgs}

        def arrived() -> bool:
            out = asyncio.run(read_all(self.broker.bootstrap_servers, k["assignments_topic"]))
            return ids <= {json.loads(m.value)["headline_id"] for m in out}

        wait(arrived, 600, "every arrival event")
        leaders = [p for p in self.procs if p.proc is not None and p.proc.poll() is None
                   and p.metric_value("streamer_recluster_leader") == 1]
        wait(lambda: any(p.metric_value("streamer_window_headlines") >= len(ids) for p in leaders), 600,
             "a run over every headline")
        raw = asyncio.run(read_all(self.broker.bootstrap_servers, k["assignments_topic"]))
        lifecycle = [ClusterEvent.model_validate_json(m.value)
                     for m in asyncio.run(read_all(self.broker.bootstrap_servers, k["cluster_events_topic"]))]
        inputs = asyncio.run(read_all(self.broker.bootstrap_servers, k["input_topic"]))
        return [AssignmentEvent.model_validate_json(m.value) for m in raw], lifecycle, [raw, inputs]

    def stop(self) -> None:
        for p in self.procs:
            if p.proc is not None and p.proc.poll() is None:
                p.terminate(60)

    def kill_leader(self) -> None:
        """SIGKILL the leader and time how long until another process reports itself leader."""
        recluster = [p for p in self.procs if p.args == ["--role", "recluster"] and p.proc.poll() is None]
        leader = next(p for p in recluster if p.metric_value("streamer_recluster_leader") == 1)
        killed = time.monotonic()
        leader.kill()
        standby = [p for p in recluster if p is not leader]
        wait(lambda: any(p.metric_value("streamer_recluster_leader") == 1 for p in standby), 120, "a new leader")
        self.failover_s.append(round(time.monotonic() - killed, 1))


def stage_ms(procs: list[Any]) -> dict[str, float]:
    """Mean milliseconds per ingest stage (``streamer_stage_duration_seconds``) over ``procs``' batches."""
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, float] = defaultdict(float)
    for proc in procs:
        for line in proc.metrics().splitlines():
            for suffix, into in (("_sum{", sums), ("_count{", counts)):
                if line.startswith("streamer_stage_duration_seconds" + suffix):
                    stage = line.split('stage="', 1)[1].split('"', 1)[0]
                    into[stage] += float(line.rsplit(" ", 1)[1])
    return {stage: round(1000 * sums[stage] / counts[stage], 1) for stage in sorted(sums) if counts[stage]}


def live_f1(rows: list[dict[str, str]], events: list[AssignmentEvent]) -> float:
    last: dict[str, int] = {}
    for e in events:  # one partition per headline: in order per headline
        last[e.headline_id] = e.cluster_id
    ids = [f"uci-{r['ID']}" for r in rows]
    stories = {s: i for i, s in enumerate(sorted({r["STORY"] for r in rows}))}
    truth = np.array([stories[r["STORY"]] for r in rows])
    predicted = noise_as_singletons(np.array([last.get(h, -1) for h in ids]))
    return round(bcubed(truth, predicted)[2], 4)


def arrival_latency_ms(raw: list[Any], inputs: list[Any], ids: list[str]) -> dict[str, float]:
    """p50/p99 of arrival event time minus input time, over ``ids`` (one sample per headline)."""
    sent = {m.key.decode(): m.timestamp for m in inputs}
    first: dict[str, int] = {}
    for m in raw:
        key = m.key.decode()
        if b'"reason":"arrival"' in m.value and key in sent and key not in first:
            first[key] = m.timestamp - sent[key]
    latencies = [first[h] for h in ids if h in first]
    return {"p50": round(float(np.percentile(latencies, 50)), 1), "p99": round(float(np.percentile(latencies, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=50.0, help="headlines/s into the input topic")
    args = parser.parse_args()
    use_data(args.data)
    rows = uci_rows(0, args.rows)
    workdir = CACHE / "topology"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    result: dict[str, Any] = {"headlines": len(rows), "rate": args.rate}
    with KafkaBroker(workdir / "kafka") as broker, MilvusServer(workdir / "milvus") as milvus:
        broker.start()
        milvus.start(timeout_s=300)
        single = Replay(workdir / "all", broker, milvus, rows)
        (workdir / "all").mkdir()
        try:
            solo = single.start("all", "all")
            stages_all: dict[str, float] = {}
            events, _, (raw_all, inputs_all) = single.run(
                args.rate, {0.39: lambda: stages_all.update(stage_ms([solo]))}
            )
            result["stage_ms_all"] = stages_all
            result["live_bcubed_f1_all"] = live_f1(rows, events)
            result["arrival_latency_ms_all"] = arrival_latency_ms(raw_all, inputs_all, [f"uci-{r['ID']}" for r in rows])
        finally:
            single.stop()
        split = Replay(workdir / "split", broker, milvus, rows)
        (workdir / "split").mkdir()
        try:
            split.start("recluster", "leader")
            split.start("recluster", "standby")
            ingest = [split.start("ingest", f"ingest{i}") for i in range(2)]
            stages_split: dict[str, float] = {}
            events, lifecycle, (raw, inputs) = split.run(
                args.rate,
                {0.39: lambda: stages_split.update(stage_ms(ingest)), 0.4: split.kill_leader, 0.7: lambda: ingest[0].kill()},
            )
            result["stage_ms_split_ingest"] = stages_split
        finally:
            split.stop()
    ids = [f"uci-{r['ID']}" for r in rows]
    audit = audit_ids(events, lifecycle)
    arrival_ids, created, epochs = audit.arrival_ids, audit.created, audit.epochs_of_run
    (CACHE / "topology" / "split" / "lifecycle.jsonl").write_text(
        "".join(c.model_dump_json() + "\n" for c in lifecycle)
    )  # what a reviewer reads when a figure below is not 0
    reused = {cid: sorted(v, key=str) for cid, v in created.items() if len(v) > 1}
    reused_runs = {run: sorted(v) for run, v in epochs.items() if len(v) > 1}
    result.update({
        "ids_reused_detail": {"created": {str(k): v for k, v in reused.items()}, "run_epochs": reused_runs},
        "lost": sum(1 for r in rows if f"uci-{r['ID']}" not in arrival_ids),
        "duplicate_arrival_events": sum(len(v) - 1 for v in arrival_ids.values()),
        "ids_reused": sum(len(v) - 1 for v in created.values()) + sum(len(v) - 1 for v in epochs.values()),
        "failovers": len(split.failover_s),
        "failover_s": split.failover_s,
        "live_bcubed_f1_split": live_f1(rows, events),
        # Steady state: the headlines sent before the first SIGKILL (40% of the replay).
        "p99_arrival_latency_ms_split": arrival_latency_ms(raw, inputs, ids[: int(0.4 * len(ids))])["p99"],
        "arrival_latency_ms_split_steady": arrival_latency_ms(raw, inputs, ids[: int(0.4 * len(ids))]),
        "arrival_latency_ms_split_through_failovers": arrival_latency_ms(raw, inputs, ids),
        "emerging_topics_split": sum(1 for c in lifecycle if c.type == "created" and c.emerging),
    })
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
