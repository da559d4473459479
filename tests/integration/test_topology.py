"""The split topology keeps the promises of ``--role all``, through a leader failover.

Two ``--role ingest`` replicas, a ``--role recluster`` leader and a standby, on the Milvus
server, a real broker and the real model, fed the repository's UCI sample. The leader is
SIGKILLed while it re-clusters, then one ingest replica. Checked on what the output topics
hold at the end:

- every headline has an arrival event, and all its arrival events carry one event id;
- no cluster id was created twice (its created events are copies of one event) and run ids
  grew across the failover (no run id under two leader epochs, the new epoch's above the old);
- emerging topics were started between runs (by the leader, from the replicas' batches);
- no headline got a re-assignment (``recluster``) that left its cluster as it was.
"""

from __future__ import annotations

import sys
import uuid
from collections import defaultdict
from typing import Any

import pytest

from streamer.domain.events import AssignmentEvent, ClusterEvent
from tests.integration.test_service import produce, wait_for
from tests.plugins.streamer_fixtures import REPO, isolated_settings
from tests.sample_data import uci_messages

sys.path.insert(0, str(REPO / "tools"))
from id_audit import audit_ids  # noqa: E402  (tools/id_audit.py: the bench tallies the same way)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]


def _settings(bootstrap: str, milvus_uri: str) -> dict[str, dict[str, Any]]:
    base = isolated_settings(
        bootstrap,
        kafka={"partitions": 2, "max_batch_size": 32},
        milvus={"uri": milvus_uri, "collection": f"topology_{uuid.uuid4().hex[:8]}"},
        clustering={"min_points": 100},
        tracking={"recluster_every_n": 150, "recluster_interval_s": 2, "window_s": 1e9},
    )
    return base


def test_two_ingest_replicas_a_leader_and_a_standby_survive_sigkills(
    kafka_bootstrap_servers: str, milvus_server: Any, service_factory: Any, read_topic: Any
) -> None:
    s = _settings(kafka_bootstrap_servers, milvus_server.uri)
    k = s["kafka"]
    leader = service_factory(s, args=["--role", "recluster"], name="leader").start()
    standby = service_factory(s, args=["--role", "recluster"], name="standby").start()
    ingest = [service_factory(s, args=["--role", "ingest"], name=f"ingest{i}").start() for i in range(2)]

    messages = uci_messages(1500)
    produce(kafka_bootstrap_servers, k["input_topic"], messages[:600])

    def processed() -> float:
        return sum(p.metric_value("streamer_messages_processed_total") for p in ingest if p.proc.poll() is None)

    def runs(p: Any) -> float:
        return p.metric_value("streamer_recluster_runs_total", 'outcome="ok"') if p.proc.poll() is None else 0

    wait_for(lambda: processed() >= 600, 240, "600 headlines through both replicas")
    first, second = (leader, standby) if leader.metric_value("streamer_recluster_leader") == 1 else (standby, leader)
    wait_for(lambda: runs(first) >= 1, 180, "a first re-clustering run")

    # Kill the leader while it re-clusters: the next run is due after recluster_every_n arrivals.
    produce(kafka_bootstrap_servers, k["input_topic"], messages[600:1000])
    before = runs(first)
    wait_for(lambda: runs(first) > before or processed() >= 800, 120, "the leader busy with arrivals")
    first.kill()
    wait_for(lambda: second.metric_value("streamer_recluster_leader") == 1, 120, "the standby taking over")
    wait_for(lambda: processed() >= 1000, 180, "1000 headlines")
    wait_for(lambda: runs(second) >= 1, 180, "a run by the new leader")

    # Kill an ingest replica; the other takes its partitions over.
    ingest[0].kill()
    produce(kafka_bootstrap_servers, k["input_topic"], messages[1000:1500])
    survivor = ingest[1]
    wait_for(lambda: _all_arrived(read_topic, k["assignments_topic"], messages), 240, "every headline's arrival event",
             interval_s=5)
    assert survivor.proc.poll() is None
    # Every headline reached the new leader's window (through the arrivals topic, or read back
    # from Milvus at the takeover) and was re-clustered.
    wait_for(lambda: second.metric_value("streamer_window_headlines") >= len(messages), 180, "a run over every headline")

    assignments = [AssignmentEvent.model_validate_json(m.value) for m in read_topic(k["assignments_topic"], idle_s=2)]
    lifecycle = [ClusterEvent.model_validate_json(m.value) for m in read_topic(k["cluster_events_topic"], idle_s=2)]

    # Every headline arrived once: one arrival event id each (redelivered copies carry it too).
    audit = audit_ids(assignments, lifecycle)
    arrival_ids, created, epochs_of_run = audit.arrival_ids, audit.created, audit.epochs_of_run
    assert {m["id"] for m in messages} <= set(arrival_ids)
    assert all(len(ids) == 1 for ids in arrival_ids.values()), "a headline with two different arrival events"

    # No id created twice; run ids grew across the failover.
    # (Event ids of two mints of one id in one run would be equal: compare what they name.)
    assert created and all(len(ids) == 1 for ids in created.values()), "a cluster id created twice"
    assert all(len(epochs) == 1 for epochs in epochs_of_run.values()), f"a run id under two leaders: {epochs_of_run}"
    by_epoch: dict[int, list[int]] = defaultdict(list)
    for run, epochs in epochs_of_run.items():
        by_epoch[next(iter(epochs))].append(run)
    assert len(by_epoch) >= 2, f"one leader epoch only: {dict(by_epoch)}"
    ordered = sorted(by_epoch)
    for older, newer in zip(ordered, ordered[1:], strict=False):
        assert max(by_epoch[older]) < min(by_epoch[newer])

    # Emerging topics in the split topology, minted by the leader.
    assert any(e.emerging for e in lifecycle if e.type == "created"), "no emerging topic between runs"

    # A re-assignment always changes what downstream held (copies of one event aside);
    # unassigned -> noise is a change (the status), noise -> noise is not.
    held: dict[str, tuple[int, str]] = {}
    seen: set[str] = set()
    for e in assignments:  # one partition per headline: in order per headline
        if e.event_id in seen:
            continue
        seen.add(e.event_id)
        if e.reason == "recluster" and e.headline_id in held:
            history = [(x.reason, x.cluster_id, x.run_id, x.leader_epoch) for x in assignments if x.headline_id == e.headline_id]
            assert held[e.headline_id] != (e.cluster_id, e.status), f"an unchanged re-assignment: {history}"
        held[e.headline_id] = (e.cluster_id, e.status)
    assert {e.cluster_id for e in assignments if e.cluster_id >= 0} <= set(created) | _ids_named(lifecycle)


def _ids_named(lifecycle: list[ClusterEvent]) -> set[int]:
    return {e.cluster_id for e in lifecycle}


def _all_arrived(read_topic: Any, topic: str, messages: list[dict[str, Any]]) -> bool:
    arrived = {
        AssignmentEvent.model_validate_json(m.value).headline_id for m in read_topic(topic, idle_s=1)
    }
    return {m["id"] for m in messages} <= arrived
