"""`make demo-stream`: replay a headline file through a local Kafka into `streamer run`.

1. start a Kafka broker (KRaft, 127.0.0.1, jars from Maven Central) in .cache/kafka/demo;
2. start `streamer run` (Milvus Lite file, bundled model) as a subprocess;
3. `streamer produce FILE` replays the file as headline messages;
4. wait until every headline has its assignment event and a re-clustering ran;
5. print lifecycle events, the largest topics and, when the file has STORY ids, the quality
   of the live assignments; stop the service (SIGTERM) and the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
sys.path.insert(0, str(REPO))

from kafka.broker import KafkaBroker  # noqa: E402  (tools/kafka/broker.py)
from streamer_process import ServiceProcess  # noqa: E402


async def _read(bootstrap: str, topic: str) -> list[dict]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out = []
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=2000)
            if not batches:
                return out
            for messages in batches.values():
                out.extend(json.loads(m.value) for m in messages)
    finally:
        await consumer.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--rate", type=float, default=None, help="messages per second (default: as fast as possible)")
    args = parser.parse_args()
    workdir = REPO / ".cache" / "kafka" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    db = REPO / ".streamer" / "demo-stream.db"
    shutil.rmtree(db, ignore_errors=True)

    from streamer.adapters.files import read_headlines

    records, _ = read_headlines(args.file)
    total = len(records)
    print(f"== stream: starting Kafka in {workdir}")
    with KafkaBroker(workdir) as broker:
        broker.start()
        run = uuid.uuid4().hex[:6]
        settings = {
            "kafka": {"bootstrap_servers": broker.bootstrap_servers, "partitions": 2, "group_id": f"demo-{run}"},
            "milvus": {"uri": str(db)},
            "clustering": {"min_points": 200},
            "tracking": {"recluster_every_n": 500, "recluster_interval_s": 5, "window_s": 30 * 86400},
            "service": {"log_format": "console", "log_level": "WARNING"},
        }
        from streamer_process import settings_env

        service = ServiceProcess(settings_env(settings), args.out / "service.log")
        print("== stream: starting streamer run (model load takes a few seconds)")
        service.start()
        print(f"== stream: replaying {total} headlines from {args.file}")
        subprocess.run(
            [sys.executable, "-m", "streamer", "produce", str(args.file), "--bootstrap-servers", broker.bootstrap_servers]
            + (["--rate", str(args.rate)] if args.rate else []),
            check=True,
            cwd=REPO,
        )
        started = time.monotonic()
        while service.metric_value("streamer_messages_processed_total") < total:
            if time.monotonic() - started > 600:
                raise SystemExit(f"timed out; see {service.log_path}")
            time.sleep(1)
        elapsed = time.monotonic() - started
        runs_before = service.metric_value("streamer_recluster_runs_total")
        deadline = time.monotonic() + 60
        while service.metric_value("streamer_recluster_runs_total") <= runs_before and time.monotonic() < deadline:
            time.sleep(1)
        code = service.terminate()
        assignments = asyncio.run(_read(broker.bootstrap_servers, "headline-assignments"))
        lifecycle = asyncio.run(_read(broker.bootstrap_servers, "cluster-events"))
    events_dir = args.out / "events"  # what `streamer serve --from OUT` (make demo-serve) reads
    events_dir.mkdir(parents=True, exist_ok=True)
    for name, events in (("headline-assignments.jsonl", assignments), ("cluster-events.jsonl", lifecycle)):
        (events_dir / name).write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")

    final: dict[str, int] = {}
    for event in sorted(assignments, key=lambda e: (e["run_id"], e["emitted_at_ms"])):
        final[event["headline_id"]] = event["cluster_id"]
    print(f"\n{total} headlines -> {len(assignments)} assignment events in {elapsed:.1f}s after the replay; service exit code {code}")
    print("lifecycle events:", dict(Counter(e["type"] for e in lifecycle)))
    latest: dict[int, dict] = {}
    for event in lifecycle:
        if event["type"] == "expired":
            latest.pop(event["cluster_id"], None)
        else:
            latest[event["cluster_id"]] = event
    print("largest topics:")
    for event in sorted(latest.values(), key=lambda e: -e["size"])[:10]:
        print(f"  [{event['cluster_id']:>4}] {event['size']:>4}  {', '.join(event['keywords'][:5])}  |  {event['exemplar_title'][:80]}")
    labels = {r.headline.id: r.label for r in records}
    if all(labels.values()) and final:
        import numpy as np

        from streamer.core.quality import score_clustering

        ids = [i for i in final if i in labels]
        scores = score_clustering(np.array([labels[i] for i in ids]), np.array([final[i] for i in ids]))
        print("live assignments vs STORY ids:", scores.as_dict())
    print(f"service log: {service.log_path}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
