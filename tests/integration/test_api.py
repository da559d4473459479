"""`streamer serve` against the real service: real Kafka broker, Milvus Lite, the model.

Headlines go through `streamer run` (several re-clustering runs, so topics grow, merge and
move); `streamer serve` reads the output topics from the beginning; every answer is checked
against the events on the topics read the plain way (tests/integration/serving.py).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.integration.serving import ServeProcess, replay, serve_factory  # noqa: F401 (fixture)
from tests.integration.test_service import _settings, produce, wait_for
from tests.sample_data import uci_messages

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MINUTE = 60_000


def _headlines(n: int) -> list[dict[str, Any]]:
    """The bundled UCI sample's first ``n`` headlines as messages (source and publication time included)."""
    return uci_messages(n)


def _caught_up(serve: ServeProcess, events: int) -> bool:
    status, body = serve.get("/api/status")
    return status == 200 and body["events"] >= events


def test_read_api_answers_what_the_events_say(
    kafka_bootstrap_servers: str, service_factory: Any, serve_factory: Any, read_topic: Any, tmp_path: Path
) -> None:
    s = _settings(kafka_bootstrap_servers, tmp_path, clustering={"min_points": 100, "min_cluster_size": 6})
    svc = service_factory(s, name="run").start()
    headlines = _headlines(600)
    sources = {h["id"]: h["source"] for h in headlines}
    assert len({v for v in sources.values() if v}) > 5, "the file names its outlets"
    serve = serve_factory(s).start()  # from the very start: it follows the topics as they grow
    for chunk in range(3):  # three bursts, a run after each: topics are created, grow, merge, move
        produce(kafka_bootstrap_servers, s["kafka"]["input_topic"], headlines[chunk * 200 : (chunk + 1) * 200])
        runs = svc.metric_value("streamer_recluster_runs_total", 'outcome="ok"')
        wait_for(
            lambda c=chunk, r=runs: svc.metric_value("streamer_messages_processed_total") >= 200 * (c + 1)
            and svc.metric_value("streamer_recluster_runs_total", 'outcome="ok"') > r,
            240,
            f"burst {chunk} processed and re-clustered",
        )
    # While `streamer run` holds the Milvus Lite file, matching says why it cannot answer.
    status, body = serve.request("POST", "/api/match", {"text": "Central bank raises interest rates"})
    assert status == 503 and "store" in body["error"], body
    assert svc.terminate() == 0

    assignments = read_topic(s["kafka"]["assignments_topic"], idle_s=2)
    lifecycle = read_topic(s["kafka"]["cluster_events_topic"], idle_s=2)
    ref = replay(assignments, lifecycle)
    assert ref.merges, "the runs merged topics: the lineage check below is not vacuous"
    wait_for(lambda: _caught_up(serve, ref.events), 60, "serve to apply every event", interval_s=0.5)

    # Sizes, members, sources and growth of every live topic.
    listing = serve.get("/api/topics?sort=size&limit=1000")[1]
    live = {cid for cid, st in ref.state.items() if st == "live" and ref.members(cid)}
    assert {t["id"] for t in listing["topics"]} == live
    now_min = max(ref.time_of.values()) // MINUTE
    assert listing["now_ms"] // MINUTE == now_min
    sizes = [t["size"] for t in listing["topics"]]
    assert sizes == sorted(sizes, reverse=True)
    for t in listing["topics"]:
        members = ref.members(t["id"])
        ages = [now_min - ref.time_of[h] // MINUTE for h in members]
        assert t["size"] == len(members)
        assert t["sources"] == len({ref.source_of[h] for h in members if ref.source_of[h]})
        assert (t["last_hour"], t["previous_hour"]) == (sum(a < 60 for a in ages), sum(60 <= a < 120 for a in ages))
        assert t["first_seen_ms"] == min(ref.time_of[h] for h in members)
        detail = serve.get(f"/api/topics/{t['id']}?limit=500")[1]
        assert {m["id"] for m in detail["members"]["items"]} == members
        times = [m["time_ms"] for m in detail["members"]["items"]]
        assert times == sorted(times, reverse=True)  # newest first
        assert sum(b["count"] for b in detail["timeline"]) == len(members)
        assert {m["source"] for m in detail["members"]["items"]} <= {sources[h] for h in members}
    growth = [t["growth"] for t in serve.get("/api/topics?sort=growth&limit=1000")[1]["topics"]]
    assert growth == sorted(growth, reverse=True)

    # Lineage after a merge.
    for survivor, absorbed in ref.merges:
        assert set(absorbed) <= set(serve.get(f"/api/topics/{survivor}")[1]["lineage"]["merged_from"])
        for cid in absorbed:
            gone = serve.get(f"/api/topics/{cid}")[1]
            assert gone["state"] == "merged" and gone["lineage"]["merged_into"] is not None
            assert cid not in {t["id"] for t in listing["topics"]}
    for child, parent in ref.splits:
        assert serve.get(f"/api/topics/{child}")[1]["lineage"]["split_from"] == parent

    # A headline's current topic and its history, as the events have it.
    per_headline = Counter(m.key for m in assignments)
    moved = [k.decode() for k, n in per_headline.items() if n > 1][:5]
    assert moved
    for hid in moved:
        view = serve.get(f"/api/headlines/{hid}")[1]
        assert view["cluster_id"] == ref.cluster_of[hid] and len(view["history"]) == per_headline[hid.encode()]
        assert view["history"][0]["reason"] == "arrival"

    # Errors are JSON with a fitting status.
    assert serve.get("/api/topics/999999")[0] == 404
    assert serve.get("/api/headlines/no-such-headline")[0] == 404
    status, body = serve.get("/api/topics?sort=loudest")
    assert status == 422 and body["fields"][0]["field"] == "sort"
    status, body = serve.request("POST", "/api/match", {"txt": "x"})
    assert status == 422 and "text" in {f["field"] for f in body["fields"]}
    assert "/api/topics/{topic_id}" in serve.get("/openapi.json")[1]["paths"]

    # With the Lite file free, /api/match answers through the model, Milvus and the snapshot:
    # a clustered headline's own text (title and description, as ingest embeds it) joins its topic.
    clustered = [h for h in ref.cluster_of if ref.cluster_of[h] in live][:10]
    titles = {h["id"]: "\n".join(filter(None, (h["title"], h.get("description")))) for h in headlines}
    joined = 0
    for hid in clustered:
        status, answer = serve.request("POST", "/api/match", {"text": titles[hid]})
        assert status == 200, answer
        if answer["cluster_id"] == ref.cluster_of[hid]:
            joined += 1
            assert answer["similarity"] >= 0.95 and answer["topic"]["id"] == answer["cluster_id"]
        assert answer["neighbours"][0]["id"] in titles
    assert joined >= 8, f"only {joined} of {len(clustered)} headlines matched their own topic"
    assert serve.terminate() == 0


def test_a_restarted_serve_rebuilds_the_same_answers(
    kafka_bootstrap_servers: str, service_factory: Any, serve_factory: Any, tmp_path: Path
) -> None:
    """Replicas need no coordination: a second serve started later answers like the first."""
    s = _settings(kafka_bootstrap_servers, tmp_path)
    svc = service_factory(s, name="run").start()
    produce(kafka_bootstrap_servers, s["kafka"]["input_topic"], _headlines(250))
    wait_for(lambda: svc.metric_value("streamer_recluster_runs_total", 'outcome="ok"') >= 1
             and svc.metric_value("streamer_messages_processed_total") >= 250, 240, "a run")
    assert svc.terminate() == 0
    first = serve_factory(s, ["--no-match"]).start()
    time.sleep(3)  # ready means caught up with the end offsets seen at start
    second = serve_factory(s, ["--no-match"]).start()
    a = first.get("/api/topics?sort=size&limit=1000")[1]
    b = second.get("/api/topics?sort=size&limit=1000")[1]
    assert a["topics"] and a["topics"] == b["topics"] and a["now_ms"] == b["now_ms"]
    assert first.request("POST", "/api/match", {"text": "x"})[0] == 503
