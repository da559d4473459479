"""Arrivals placed between runs: the snapshot first, then recent arrivals, then emerging topics."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamer.core.arrivals import ArrivalAssigner, EmergingRule
from streamer.core.clustering import HdbscanParams, run_hdbscan
from streamer.core.graph import build_distance_graph, knn_exact
from streamer.core.snapshot import build_snapshot
from streamer.core.summaries import ClusterSummary
from streamer.core.tracking import ClusterRegistry
from streamer.domain.events import ClusterEventType
from streamer.domain.headline import NOISE, Headline
from tests.unit.helpers import blobs, unit_rows

RULE = EmergingRule(attach_similarity=0.5, emerging_similarity=0.6, emerging_min_size=3)


class _World:
    """A snapshot of clustered blobs, a registry that knows it, and an exact 'Milvus search'."""

    def __init__(self, seed: int = 0) -> None:
        x, _ = blobs(3, 40, spread=0.2, seed=seed)
        self.ids = [f"p{i}" for i in range(len(x))]
        self.vectors = x
        graph = build_distance_graph(knn_exact(x, 10))
        clustering = run_hdbscan(graph, HdbscanParams(min_cluster_size=5, min_samples=2, selection_method="eom", selection_epsilon=0.0, attach_similarity=0.0))
        self.snapshot = build_snapshot(1, self.ids, graph, clustering, 2, attach_similarity=0.5)
        self.registry = ClusterRegistry()
        summaries = [
            ClusterSummary(cluster_id=c, size=int((clustering.labels == c).sum()), keywords=["k"], exemplar_id="p0",
                           exemplar_title="t", persistence=0.1)
            for c in range(clustering.n_clusters)
        ]
        self.stable_ids = self.registry.update(self.ids, clustering.labels, summaries).stable_ids

    def add_and_search(self, names: list[str], vectors: np.ndarray, limit: int = 21) -> tuple[list[list[str]], np.ndarray]:
        self.ids += names
        self.vectors = np.vstack([self.vectors, vectors])
        sims = vectors @ self.vectors.T
        order = np.argsort(-sims, axis=1)[:, :limit]
        return [[self.ids[j] for j in row] for row in order], np.take_along_axis(sims, order, 1)


def _story(seed: int, n: int, dim: int, spread: float = 0.05) -> np.ndarray:
    """n headlines of one new story: a direction no blob has, small noise around it."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim)
    return unit_rows(centre + spread * np.linalg.norm(centre) * rng.normal(size=(n, dim)) / np.sqrt(dim))


def _heads(names: list[str]) -> list[Headline]:
    return [Headline(id=n, title=f"title {n}", published_at_ms=1) for n in names]


def test_a_new_story_gets_an_id_once_it_has_enough_close_headlines() -> None:
    """Two unplaced arrivals stay noise; the third close one starts an emerging topic that takes
    the two in (reported as moved); the fourth follows it."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    story = _story(7, 4, world.vectors.shape[1])
    placements = []
    moved: list[tuple[Headline, int]] = []
    started: list[int] = []
    for i in range(4):
        name = [f"s{i}"]
        found, sims = world.add_and_search(name, story[i : i + 1])
        outcome = assigner.assign(world.snapshot, world.stable_ids, _heads(name), found, sims)
        placements += outcome.placements
        moved += outcome.moved
        started += outcome.started
    assert [p.how for p in placements] == ["noise", "noise", "emerging", "follow"]
    assert len(started) == 1 and started[0] not in world.stable_ids.tolist()
    topic = started[0]
    assert placements[2].cluster_id == placements[3].cluster_id == topic
    assert sorted((h.id, cid) for h, cid in moved) == [("s0", topic), ("s1", topic)]
    # The registry holds the emerging topic with all four members, ready for the next run's matching.
    assert world.registry.clusters[topic].emerging
    assert world.registry.clusters[topic].members == {"s0", "s1", "s2", "s3"}
    created = world.registry.minted_event(topic)
    assert created.type == ClusterEventType.CREATED and created.emerging and created.size == 4


def test_arrivals_near_a_known_cluster_keep_the_snapshot_rule() -> None:
    """An arrival inside a snapshot cluster is placed by the snapshot, not by recent arrivals."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    near = unit_rows(world.vectors[:1] + 0.01)
    found, sims = world.add_and_search(["n0"], near)
    outcome = assigner.assign(world.snapshot, world.stable_ids, _heads(["n0"]), found, sims)
    assert outcome.placements[0].how == "snapshot"
    assert outcome.placements[0].cluster_id == int(world.stable_ids[world.snapshot.labels[0]])
    assert not outcome.started


def test_a_close_group_beside_a_snapshot_cluster_continues_it() -> None:
    """Arrivals far closer to each other than to a clustered headline, yet within emerging_similarity
    of one, continue that cluster (the next run keeps them there); no topic is started."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    rng = np.random.default_rng(3)
    anchor = world.vectors[0]
    off = rng.normal(size=anchor.shape)
    off -= (off @ anchor) * anchor
    off /= np.linalg.norm(off)
    centre = 0.8 * anchor + 0.6 * off  # cosine 0.8 to the clustered headline p0
    group = unit_rows(centre + 0.01 * rng.normal(size=(4, anchor.size)))
    outcomes = []
    for i in range(4):
        found, sims = world.add_and_search([f"c{i}"], group[i : i + 1])
        outcomes.append(assigner.assign(world.snapshot, world.stable_ids, _heads([f"c{i}"]), found, sims))
    assert not any(o.started for o in outcomes)
    cluster_of_p0 = int(world.stable_ids[world.snapshot.labels[0]])
    assert all(o.placements[0].cluster_id == cluster_of_p0 for o in outcomes)


def test_scattered_unplaced_arrivals_start_nothing() -> None:
    """Arrivals that are not close to each other stay noise: no topic from unrelated headlines."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    dim = world.vectors.shape[1]
    for i in range(6):
        found, sims = world.add_and_search([f"r{i}"], _story(100 + i, 1, dim))
        outcome = assigner.assign(world.snapshot, world.stable_ids, _heads([f"r{i}"]), found, sims)
        assert outcome.placements[0].cluster_id == NOISE and not outcome.started


def test_without_a_minter_or_leadership_no_topic_is_started() -> None:
    """A follower (no registry) or a non-leader leaves a new story as noise; it still follows recent arrivals."""
    for assigner in (ArrivalAssigner(RULE, None), ArrivalAssigner(RULE, ClusterRegistry(), may_mint=lambda: False)):
        world = _World()
        story = _story(7, 4, world.vectors.shape[1])
        for i in range(4):
            found, sims = world.add_and_search([f"s{i}"], story[i : i + 1])
            outcome = assigner.assign(world.snapshot, world.stable_ids, _heads([f"s{i}"]), found, sims)
            assert outcome.placements[0].cluster_id == NOISE and not outcome.started


def test_a_batch_sees_its_own_earlier_arrivals() -> None:
    """Three close headlines in one batch: the third starts the topic with the first two."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    names = ["b0", "b1", "b2"]
    found, sims = world.add_and_search(names, _story(9, 3, world.vectors.shape[1]))
    outcome = assigner.assign(world.snapshot, world.stable_ids, _heads(names), found, sims)
    assert [p.how for p in outcome.placements] == ["noise", "noise", "emerging"]
    assert {h.id for h, _ in outcome.moved} == {"b0", "b1"}


def test_next_run_confirms_an_emerging_topic_under_its_id() -> None:
    """The run after a topic emerged finds the story as a cluster: it keeps the emerging id
    (updated, not created again)."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    story = _story(7, 12, world.vectors.shape[1])
    names = [f"s{i}" for i in range(12)]
    for i, name in enumerate(names):
        found, sims = world.add_and_search([name], story[i : i + 1])
        assigner.assign(world.snapshot, world.stable_ids, _heads([name]), found, sims)
    topic = next(cid for cid, c in world.registry.clusters.items() if c.emerging)
    labels = np.concatenate([world.snapshot.labels, np.full(12, world.snapshot.n_clusters)])
    summaries = [
        ClusterSummary(cluster_id=c, size=int((labels == c).sum()), keywords=["k"], exemplar_id="x", exemplar_title="t",
                       persistence=0.1)
        for c in range(int(labels.max()) + 1)
    ]
    result = world.registry.update(world.ids, labels, summaries)
    assert int(result.stable_ids[-1]) == topic
    kinds = {(e.type, e.cluster_id) for e in result.events}
    assert (ClusterEventType.UPDATED, topic) in kinds and (ClusterEventType.CREATED, topic) not in kinds
    assert not world.registry.clusters[topic].emerging


def test_a_topic_minted_during_an_update_survives_it() -> None:
    """mint() on the event loop while update() computes in a worker: the new topic is kept, ids never collide."""
    registry = ClusterRegistry()
    ids = [f"h{i}" for i in range(2000)]
    labels = np.repeat(np.arange(100), 20)
    summaries = [ClusterSummary(cluster_id=c, size=20, keywords=[], exemplar_id="x", exemplar_title="t", persistence=0.0)
                 for c in range(100)]
    minted: list[int] = []
    worker = threading.Thread(target=registry.update, args=(ids, labels, summaries))
    worker.start()
    for i in range(50):
        minted.append(registry.mint([f"new{i}"], Headline(id=f"new{i}", title="t", published_at_ms=1)))
    worker.join()
    assert set(minted) <= set(registry.clusters)
    assert len(set(registry.clusters)) == 150 and len(minted) == len(set(minted))


def test_rule_rejects_a_topic_of_one() -> None:
    with pytest.raises(ValueError, match="emerging_min_size"):
        EmergingRule(emerging_min_size=1)


def test_a_restart_before_the_commit_brings_the_emerging_topic_back_under_its_id() -> None:
    """A topic is minted and its state written; the process dies before the batch is committed.
    A fresh registry restored from the last run's state plus that record, and a fresh assigner,
    get the same headlines again: they land in the same topic, and no second id is minted."""
    world = _World()
    after_last_run = world.registry.to_state()
    assigner = ArrivalAssigner(RULE, world.registry)
    story = _story(11, 4, world.vectors.shape[1])
    names = [f"s{i}" for i in range(4)]
    searches = [world.add_and_search([n], story[i : i + 1]) for i, n in enumerate(names)]
    first = []
    for i, name in enumerate(names):
        first.append(assigner.assign(world.snapshot, world.stable_ids, _heads([name]), *searches[i]))
        if first[-1].started:  # what the pipeline sends to the state topic right at the mint
            written, created = world.registry.emerging_state(), world.registry.minted_event(first[-1].started[0])
    assert [o.placements[0].how for o in first] == ["noise", "noise", "emerging", "follow"]
    topic = first[2].started[0]

    restarted = ClusterRegistry()
    restarted.load_state(after_last_run)
    assert restarted.restore_emerging(written) == [topic]
    assert restarted.minted_event(topic).event_id == created.event_id  # re-sent at start: the same event
    again = ArrivalAssigner(RULE, restarted)
    replayed = [again.assign(world.snapshot, world.stable_ids, _heads([n]), *searches[i]) for i, n in enumerate(names)]
    assert not any(o.started for o in replayed)
    assert [o.placements[0].cluster_id for o in replayed] == [topic] * 4
    # The minted members keep their topic; the fourth, never written down, follows them into it.
    assert [o.placements[0].how for o in replayed] == ["redelivered"] * 3 + ["follow"]
    assert restarted.next_id == world.registry.next_id
    # A new arrival of the same story joins the restored topic instead of starting another.
    more = _story(11, 6, world.vectors.shape[1])[5:6]
    found, sims = world.add_and_search(["s5"], more)
    outcome = again.assign(world.snapshot, world.stable_ids, _heads(["s5"]), found, sims)
    assert outcome.placements[0].cluster_id == topic and not outcome.started


def test_a_record_from_before_the_last_run_restores_nothing() -> None:
    """The run after a mint matched or expired the topic: its record is history, not state."""
    world = _World()
    assigner = ArrivalAssigner(RULE, world.registry)
    story = _story(13, 3, world.vectors.shape[1])
    for i in range(3):
        found, sims = world.add_and_search([f"s{i}"], story[i : i + 1])
        assigner.assign(world.snapshot, world.stable_ids, _heads([f"s{i}"]), found, sims)
    written = world.registry.emerging_state()
    assert written["emerging"]
    world.registry.update(world.ids[:120], np.asarray(world.snapshot.labels), [
        ClusterSummary(cluster_id=c, size=1, keywords=["k"], exemplar_id="p0", exemplar_title="t", persistence=0.1)
        for c in range(int(np.max(world.snapshot.labels)) + 1)
    ])
    later = ClusterRegistry()
    later.load_state(world.registry.to_state())
    assert later.restore_emerging(written) == []
    assert later.next_id == world.registry.next_id
