"""Leadership of the re-clusterer: takeovers read the latest state, runs persist before they
publish, and a deposed leader's run persists and publishes nothing.

Two :class:`Reclusterer` instances share one in-memory state topic (latest value per key, as
compaction keeps it) and one event log: the same roles a leader and its standby play against
Kafka in tests/integration/test_service.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ReclusterConfig
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.observability.metrics import Health, Metrics
from streamer.service.concurrency import BlockingRunner
from streamer.service.leadership import (
    LEADER_KEY,
    Claim,
    Deposed,
    Leadership,
    decode_claim,
    encode_claim,
)
from streamer.service.recluster import Reclusterer
from streamer.service.retry import Retrier
from streamer.service.snapshots import STATE_REGISTRY_KEY, SnapshotHolder
from tests.unit.helpers import SMALL_DATA_PARAMS, blobs
from tests.unit.test_recluster_schedule import QuietStore, arrivals


class SharedTopics:
    """The state topic (latest value per key) and the event topics, in the order things were sent."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.log: list[tuple[str, Any]] = []

    def sink(self) -> Any:
        topics = self

        class Sink:
            async def send_cluster_events(self, events: list[ClusterEvent]) -> None:
                topics.log.extend(("cluster", e) for e in events)

            async def send_assignments(self, events: list[AssignmentEvent]) -> None:
                topics.log.extend(("assignment", e) for e in events)

            async def send_state(self, topic: str, key: bytes, value: bytes) -> None:
                topics.state[key] = value
                topics.log.append(("state", key))

        return Sink()

    async def read(self) -> dict[bytes, bytes]:
        return dict(self.state)

    def events(self, kind: str) -> list[Any]:
        return [e for k, e in self.log if k == kind]


class Flag:
    """An election's term, set by the test."""

    def __init__(self) -> None:
        self.term = 0

    def __call__(self) -> int:
        return self.term


def make(
    topics: SharedTopics, term: Flag, runner: BlockingRunner, grace_s: float = 0.3
) -> tuple[Reclusterer, SnapshotHolder]:
    holder = SnapshotHolder()
    config = ReclusterConfig(params=SMALL_DATA_PARAMS, k=5, min_points=20, takeover_grace_s=grace_s)
    reclusterer = Reclusterer(
        store=QuietStore(), sink=topics.sink(), runner=runner, holder=holder,  # type: ignore[arg-type]
        registry=ClusterRegistry(), metrics=Metrics(CollectorRegistry()), config=config, dim=24,
        leadership=Leadership(term), read_state=topics.read,
    )
    return reclusterer, holder


def retrier() -> Retrier:
    return Retrier(Metrics(CollectorRegistry()), Health(), asyncio.Event(), 0.01, 0.1)


def test_a_claim_is_above_every_epoch_seen_and_a_newer_one_deposes() -> None:
    term = Flag()
    leadership = Leadership(term, owner="b")
    assert not leadership.needs_takeover() and not leadership.holds()
    term.term = 1
    assert leadership.needs_takeover()
    leadership.observe(Claim(4, "a"))
    assert leadership.claim(floor=2) == 5 and leadership.holds()
    # Claimed, takeover not finished: it holds the claim but does not act, and still owes the takeover.
    assert not leadership.leads() and leadership.needs_takeover()
    leadership.confirm(5)
    assert leadership.leads() and not leadership.needs_takeover()
    leadership.check(5)
    leadership.observe(Claim(5, "a"))  # the same epoch from another takeover: owners break the tie
    assert leadership.holds()
    leadership.observe(Claim(5, "c"))
    assert not leadership.holds() and not leadership.leads()
    with pytest.raises(Deposed):
        leadership.check(5)
    # Still elected: the other claimer is the deposed one, so this instance takes over again.
    assert leadership.needs_takeover() and leadership.claim() == 6
    term.term = 0
    assert not leadership.holds() and not leadership.needs_takeover()
    term.term = 2  # lost and won again: a new term takes over again
    assert leadership.needs_takeover() and leadership.claim() == 7
    assert decode_claim(encode_claim(Claim(7, "b", 40, 3))) == Claim(7, "b", 40, 3)
    assert decode_claim(b"not json").epoch == 0


def test_a_takeover_continues_ids_and_runs_and_a_deposed_leaders_run_publishes_nothing() -> None:
    async def scenario() -> None:
        topics = SharedTopics()
        runner = BlockingRunner(1)
        a_term, b_term = Flag(), Flag()
        a, a_holder = make(topics, a_term, runner)
        b, _ = make(topics, b_term, runner)
        vectors, _ = blobs(n_clusters=3, per_cluster=30)
        more, _ = blobs(n_clusters=3, per_cluster=30, seed=5)
        try:
            a_term.term = 1
            a.on_arrivals(arrivals(vectors, 0, 5))
            first = await a.run_once(retrier())
            assert first is not None and first.clusters >= 2
            # Persisted before published: the registry record precedes the run's first event.
            kinds = [k if k != "state" else e for k, e in topics.log]
            assert kinds.index(STATE_REGISTRY_KEY) < kinds.index("cluster")
            a_ids = {e.cluster_id for e in topics.events("cluster") if e.type == "created"}
            assert all(e.leader_epoch == 1 for e in topics.events("cluster"))

            # B wins the election while A computes its next run; A's run must leave no trace.
            a.on_arrivals(arrivals(more, 90, 5))
            compute = a._compute

            def compute_while_deposed(*args: Any) -> Any:
                asyncio.run_coroutine_threadsafe(b.take_over(retrier()), loop).result(10)
                a.leadership.observe(decode_claim(topics.state[LEADER_KEY]))  # A's state tail sees it
                return compute(*args)

            loop = asyncio.get_running_loop()
            a._compute = compute_while_deposed  # type: ignore[method-assign]
            b_term.term = 1
            sent_before = len(topics.log)
            snapshot_before = a_holder.current
            with pytest.raises(Deposed):
                await a.run_once(retrier())
            after_takeover = topics.log[sent_before:]
            assert {e for k, e in after_takeover if k == "state"} == {LEADER_KEY}  # B's claim; A wrote nothing
            assert not [e for k, e in after_takeover if k != "state" and e.run_id > first.run_id]
            # What B re-sent is A's last run (same event ids), nothing from A's dropped run.
            first_run_ids = {e.event_id for e in topics.events("cluster") if e.run_id == first.run_id}
            resent = [e for k, e in after_takeover if k == "cluster"]
            assert resent and {e.event_id for e in resent} <= first_run_ids
            assert a_holder.current is snapshot_before  # A swapped nothing in
            assert decode_claim(topics.state[LEADER_KEY]).epoch == 2

            # B continues A's numbering: its run id is above A's, its new ids never A's.
            b.on_arrivals(arrivals(np.vstack([vectors, more]), 0, 5))
            second = await b.run_once(retrier())
            assert second is not None and second.run_id == first.run_id + 1
            b_created = {e.cluster_id for e in topics.events("cluster") if e.type == "created" and e.run_id == second.run_id}
            assert not b_created & a_ids
            assert min(b_created, default=max(a_ids) + 1) > max(a_ids)
            assert all(e.leader_epoch == 2 for e in topics.events("cluster") if e.run_id == second.run_id)
        finally:
            runner.shutdown()

    asyncio.run(scenario())


def test_a_restart_after_persisting_re_sends_the_run_it_may_not_have_published() -> None:
    """The run's events travel in its registry record; the next leader re-sends them, same ids."""

    async def scenario() -> None:
        topics = SharedTopics()
        runner = BlockingRunner(1)
        term = Flag()
        term.term = 1
        first, _ = make(topics, term, runner)
        vectors, _ = blobs(n_clusters=3, per_cluster=30)
        try:
            first.on_arrivals(arrivals(vectors, 0, 5))
            report = await first.run_once(retrier())
            assert report is not None
            published = [e.event_id for k, e in topics.log if k in ("cluster", "assignment")]
            topics.log.clear()  # as if the process died before any event got out
            second, holder = make(topics, term, runner)
            await second.take_over(retrier())
            resent = [e.event_id for k, e in topics.log if k in ("cluster", "assignment")]
            assert resent and sorted(resent) == sorted(published)
            assert second.registry.run_id == report.run_id and holder.current is not None
        finally:
            runner.shutdown()

    asyncio.run(scenario())


def test_a_run_a_deposed_leader_persists_before_it_sees_the_claim_is_continued_not_repeated() -> None:
    """A finishes a run after B claimed but before A's state follower shows the claim: B's read
    comes after the grace, so B continues from A's run instead of minting A's ids again."""

    async def scenario() -> None:
        topics = SharedTopics()
        runner = BlockingRunner(1)
        a_term, b_term = Flag(), Flag()
        a, _ = make(topics, a_term, runner)
        b, _ = make(topics, b_term, runner, grace_s=5.0)  # A's run fits in it even on a loaded machine
        vectors, _ = blobs(n_clusters=3, per_cluster=30)
        more, _ = blobs(n_clusters=3, per_cluster=30, seed=9)
        try:
            a_term.term = 1
            a.on_arrivals(arrivals(vectors, 0, 5))
            first = await a.run_once(retrier())
            assert first is not None
            a.on_arrivals(arrivals(more, 90, 5))
            b_term.term = 1
            takeover = asyncio.create_task(b.take_over(retrier()))
            await asyncio.sleep(0.05)  # B's claim is out; A has not seen it
            second = await a.run_once(retrier())  # A never observes B's claim here
            assert second is not None
            await takeover
            assert b.registry.run_id == second.run_id
            b.on_arrivals(arrivals(np.vstack([vectors, more]), 0, 5))
            third = await b.run_once(retrier())
            assert third is not None and third.run_id == second.run_id + 1
            created: dict[int, set[tuple[int, str | None]]] = {}
            for e in topics.events("cluster"):
                if e.type == "created":
                    created.setdefault(e.cluster_id, set()).add((e.run_id, e.exemplar_id))
            assert all(len(v) == 1 for v in created.values()), f"an id minted twice: {created}"
        finally:
            runner.shutdown()

    asyncio.run(scenario())
