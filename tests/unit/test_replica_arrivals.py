"""The re-clusterer's side of the split topology: forwarded batches, their wire form, the leader's second look."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from streamer.adapters.kafka.arrivals import decode_arrivals, encode_arrivals
from streamer.core.arrivals import ArrivalAssigner, EmergingRule
from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.domain.headline import NOISE, UNASSIGNED, Headline
from streamer.domain.ports import Arrivals, PublishedArrivals
from streamer.observability.metrics import Health, Metrics
from streamer.service.leadership import Claim, Leadership
from streamer.service.placement import ArrivalPlacement
from streamer.service.replica_arrivals import ReplicaArrivals
from streamer.service.retry import Retrier
from streamer.service.snapshots import (
    STATE_ID_COUNTER_KEY,
    LiveSnapshot,
    SnapshotHolder,
)
from tests.unit.test_arrivals import _story, _World


class Window:
    def __init__(self) -> None:
        self.taken: list[str] = []

    def on_arrivals(self, arrivals: Arrivals) -> None:
        self.taken.extend(h.id for h in arrivals.headlines)


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    async def send_cluster_events(self, events: list[ClusterEvent]) -> None:
        self.sent.extend(("cluster", e) for e in events)

    async def send_assignments(self, events: list[AssignmentEvent]) -> None:
        self.sent.extend(("assignment", e) for e in events)

    async def send_state(self, topic: str, key: bytes, value: bytes) -> None:
        self.sent.append(("state", key))

    async def dead_letter(self, *args: object) -> None:
        raise AssertionError("nothing is dead-lettered here")


def batch(vectors: np.ndarray, first: int, published: list[int]) -> PublishedArrivals:
    n = len(vectors)
    heads = [Headline(id=f"r{first + i}", title=f"replica headline {first + i}", published_at_ms=first + i) for i in range(n)]
    sims = vectors @ vectors.T
    order = np.argsort(-sims, axis=1)
    ids = [[f"r{first + j}" for j in row] for row in order]
    return PublishedArrivals(Arrivals(heads, vectors, ids, np.take_along_axis(sims, order, 1).astype(np.float32)), published)


def test_a_batch_survives_its_wire_form() -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    original = batch(vectors, 0, [3, NOISE, UNASSIGNED, 3, 7])
    back = decode_arrivals(encode_arrivals(original))
    assert back.published == original.published
    assert [h.id for h in back.arrivals.headlines] == [h.id for h in original.arrivals.headlines]
    assert back.arrivals.neighbour_ids == original.arrivals.neighbour_ids
    assert np.allclose(back.arrivals.vectors, vectors, atol=1e-3)
    assert np.allclose(back.arrivals.neighbour_sims, original.arrivals.neighbour_sims, atol=1e-3)


def make(leading: bool, taken: bool = True) -> tuple[ReplicaArrivals, SnapshotHolder, _World, Window, Sink]:
    """``leading``: elected and claimed; ``taken``: and its takeover finished."""
    world = _World()
    holder, registry, window, sink = SnapshotHolder(), world.registry, Window(), Sink()
    holder.swap(LiveSnapshot(world.snapshot, world.stable_ids))
    leadership = Leadership(lambda: 1 if leading else 0)
    if leading:
        epoch = leadership.claim()
        if taken:
            leadership.confirm(epoch)
    metrics = Metrics(CollectorRegistry())
    taker = ReplicaArrivals(
        holder=holder, registry=registry, window=window, sink=sink, leadership=leadership,  # type: ignore[arg-type]
        retrier=Retrier(metrics, Health(), asyncio.Event(), 0.01, 0.1), metrics=metrics, state_topic="state",
        placement=ArrivalPlacement(holder, ArrivalAssigner(EmergingRule(emerging_min_size=3), registry, leadership.leads), registry),
    )
    return taker, holder, world, window, sink


def story_batch(world: _World, published: list[int]) -> PublishedArrivals:
    """Three headlines of a story no cluster has, searched as Milvus would (each finds the others)."""
    names = [f"r{i}" for i in range(3)]
    vectors = _story(7, 3, world.vectors.shape[1]).astype(np.float32)
    found, sims = world.add_and_search(names, vectors)
    heads = [Headline(id=n, title=f"replica headline {n}", published_at_ms=1) for n in names]
    return PublishedArrivals(Arrivals(heads, vectors, found, sims.astype(np.float32), 3), published)


def test_the_leader_starts_an_emerging_topic_from_arrivals_replicas_published_as_noise() -> None:
    async def scenario() -> None:
        taker, holder, world, window, sink = make(leading=True)
        forwarded = story_batch(world, [NOISE, NOISE, NOISE])
        await taker.take(forwarded)
        await taker.take(forwarded)  # a redelivered copy changes nothing
        kinds = [k if k != "state" else e for k, e in sink.sent]
        created = [e for k, e in sink.sent if k == "cluster"]
        assert len(created) == 1 and created[0].emerging and created[0].leader_epoch == 1
        assert kinds.index(STATE_ID_COUNTER_KEY) < kinds.index("cluster")  # the counter before the event
        moved = [(e.headline_id, e.cluster_id) for k, e in sink.sent if k == "assignment"]
        assert sorted(moved) == [(f"r{i}", created[0].cluster_id) for i in range(3)]  # once each
        assert all(e.reason == "emerging" for k, e in sink.sent if k == "assignment")
        assert window.taken == ["r0", "r1", "r2"]
        assert all(holder.published(f"r{i}") == created[0].cluster_id for i in range(3))

    asyncio.run(scenario())


def test_a_standby_remembers_what_was_published_and_publishes_nothing() -> None:
    async def scenario() -> None:
        taker, holder, world, window, sink = make(leading=False)
        registry = world.registry
        cid = next(iter(registry.clusters))
        await taker.take(story_batch(world, [cid, NOISE, NOISE]))
        assert sink.sent == []
        assert holder.published("r0") == cid and holder.published("r1") == NOISE
        # A takeover replaces the registry, then records what the holder remembers (Reclusterer.take_over).
        assert "r0" not in registry.clusters[cid].members
        assert window.taken == ["r0", "r1", "r2"]

    asyncio.run(scenario())


def test_a_claim_whose_takeover_is_not_done_mints_and_publishes_nothing() -> None:
    """Between its claim and the end of its takeover (the grace, the second state read) the new
    leader's registry is the one read before the claim: a deposed leader may still mint from the
    same counter then, so nothing is minted or published from it; the batch reaches the window."""

    async def scenario() -> None:
        taker, holder, world, window, sink = make(leading=True, taken=False)
        before = world.registry.next_id
        await taker.take(story_batch(world, [NOISE, NOISE, NOISE]))
        assert sink.sent == [] and world.registry.next_id == before
        assert window.taken == ["r0", "r1", "r2"] and holder.published("r0") == NOISE

    asyncio.run(scenario())


def test_a_record_whose_parts_disagree_is_refused() -> None:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(3, 8)).astype(np.float32)
    data = json.loads(encode_arrivals(batch(vectors, 0, [NOISE, NOISE, NOISE])))
    data["published"] = data["published"][:2]
    with pytest.raises(ValueError, match="3 headlines"):
        decode_arrivals(json.dumps(data).encode())


def test_a_leader_deposed_while_placing_publishes_nothing_and_goes_on() -> None:
    """The claim of a newer leader lands while the counter is written: no event gets out, the
    batch still reaches the window, and take() returns (the follower goes on)."""

    async def scenario() -> None:
        taker, holder, world, window, sink = make(leading=True)
        leadership = taker._leadership

        async def state_then_deposed(topic: str, key: bytes, value: bytes) -> None:
            sink.sent.append(("state", key))
            leadership.observe(Claim(leadership.epoch + 1, "newer"))  # type: ignore[operator]

        sink.send_state = state_then_deposed  # type: ignore[method-assign]
        await taker.take(story_batch(world, [NOISE, NOISE, NOISE]))
        assert [k for k, _ in sink.sent] == ["state"]
        assert window.taken == ["r0", "r1", "r2"]

    asyncio.run(scenario())
