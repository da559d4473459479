"""The read model (streamer.readmodel): membership, growth, window, lineage, duplicates, ordering.

Events are built with the schema's own constructors; a reference computed the slow way (a
full rescan of every headline) checks the incremental growth counts on random streams.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.core.readmodel import HOUR_MS, ReadModel
from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    ClusterEvent,
    ClusterEventType,
    decode_event,
)
from streamer.domain.headline import NOISE, Headline

T0 = 1_700_000_000_000
MIN = 60_000


def assign(hid: str, cluster: int, t: int, *, run: int = 1, source: str | None = "wire", reason: str = "arrival") -> AssignmentEvent:
    headline = Headline(id=hid, title=f"title {hid}", published_at_ms=t, source=source)
    return AssignmentEvent.for_cluster(
        headline=headline, cluster_id=cluster, probability=0.9, run_id=run, reason=AssignmentReason(reason)
    )


def cluster(kind: str, cid: int, run: int, **fields: object) -> ClusterEvent:
    fields.setdefault("size", 1)
    return ClusterEvent.make(type=ClusterEventType(kind), cluster_id=cid, run_id=run, **fields)  # type: ignore[arg-type]


def test_membership_sizes_sources_and_first_last_seen_follow_the_latest_assignment() -> None:
    m = ReadModel()
    m.apply(cluster("created", 1, 1, keywords=["zoo", "penguins"], exemplar_id="a", exemplar_title="Penguins escape"))
    m.apply(assign("a", 1, T0, source="Reuters"))
    m.apply(assign("b", 1, T0 + MIN, source="AP"))
    m.apply(assign("c", 1, T0 + 2 * MIN, source="Reuters"))
    m.apply(assign("d", NOISE, T0 + 3 * MIN))
    m.apply(assign("c", 2, T0 + 2 * MIN, run=2, reason="recluster"))  # c moves to topic 2
    one = m.topic(1)
    assert one is not None and one.size == 2 and one.sources == 2
    assert (one.first_seen_ms, one.last_seen_ms) == (T0, T0 + MIN)
    assert [x.id for x in one.members.items] == ["b", "a"]  # newest first
    two = m.topic(2)
    assert two is not None and two.size == 1 and two.keywords == [] and two.exemplar_title == "title c"
    view = m.headline("c")
    assert view is not None and view.cluster_id == 2 and [r.cluster_id for r in view.history] == [1, 2]
    assert m.headline("d").cluster_id == NOISE and m.headline("zz") is None  # type: ignore[union-attr]
    assert m.topic(99) is None


def test_a_redelivered_event_is_applied_once() -> None:
    m = ReadModel()
    first = assign("a", 1, T0)
    moved = assign("a", 2, T0, run=2, reason="recluster")
    for event in (first, moved, first):  # the copy of the first event comes after the move
        m.apply(event)
    assert m.headline("a").cluster_id == 2  # type: ignore[union-attr]
    assert len(m.headline("a").history) == 2  # type: ignore[union-attr]


def test_growth_counts_the_last_hour_against_the_hour_before_by_event_time() -> None:
    m = ReadModel()
    for i in range(3):  # two hours ago
        m.apply(assign(f"old{i}", 1, T0 + i * MIN))
    for i in range(5):  # the hour before now
        m.apply(assign(f"mid{i}", 1, T0 + HOUR_MS + 10 * MIN + i * MIN))
    for i in range(2):
        m.apply(assign(f"q{i}", 2, T0 + HOUR_MS + 10 * MIN + i * MIN))
    m.apply(assign("now", 2, T0 + 2 * HOUR_MS + 20 * MIN))
    listing = m.topics(sort="growth")
    by_id = {t.id: t for t in listing.topics}
    assert (by_id[1].last_hour, by_id[1].previous_hour) == (0, 5)
    assert (by_id[2].last_hour, by_id[2].previous_hour) == (1, 2)
    assert [t.id for t in listing.topics] == [2, 1]  # -1 beats -5
    assert sum(by_id[1].sparkline) == 5 + 3 and by_id[2].sparkline[-1] == 1
    assert [t.id for t in m.topics(sort="size").topics] == [1, 2]
    assert [t.id for t in m.topics(sort="recent").topics] == [2, 1]


def test_window_expires_old_headlines_by_event_time_and_by_count() -> None:
    m = ReadModel(window_ms=2 * HOUR_MS, max_headlines=3)
    m.apply(assign("a", 1, T0))
    m.apply(assign("b", 1, T0 + HOUR_MS))
    m.apply(assign("c", 1, T0 + 3 * HOUR_MS))  # a is now older than the window
    assert m.headline("a") is None and m.topic(1).size == 2  # type: ignore[union-attr]
    m.apply(assign("d", 2, T0 + 3 * HOUR_MS + MIN))
    m.apply(assign("e", 2, T0 + 3 * HOUR_MS + 2 * MIN))  # 4 left in the window > 3: b goes
    assert m.headline("b") is None and m.headline_count == 3
    m.apply(assign("late", 1, T0))  # arrives older than the window: never enters
    assert m.headline("late") is None


def test_lineage_of_merge_and_split_and_ids_never_come_back() -> None:
    m = ReadModel()
    for cid, hid in ((1, "a"), (2, "b"), (3, "c")):
        m.apply(cluster("created", cid, 1, keywords=[f"k{cid}"]))
        m.apply(assign(hid, cid, T0 + cid))
    m.apply(cluster("merged", 1, 2, merged_from=[2], keywords=["k1"]))
    m.apply(assign("b", 1, T0 + 2, run=2, reason="recluster"))
    m.apply(cluster("split", 3, 2, split_into=[4]))
    m.apply(cluster("created", 4, 2, split_from=3, keywords=["k4"]))
    m.apply(assign("d", 4, T0 + 10, run=2))
    m.apply(cluster("created", 2, 1, keywords=["late"]))  # topic 2's created event read after its merge
    merged = m.topic(2)
    assert merged is not None and merged.state == "merged" and merged.lineage.merged_into == 1
    assert m.topic(1).lineage.merged_from == [2] and m.topic(1).size == 2  # type: ignore[union-attr]
    assert m.topic(3).lineage.split_into == [4] and m.topic(4).lineage.split_from == 3  # type: ignore[union-attr]
    assert sorted(t.id for t in m.topics().topics) == [1, 3, 4]
    m.apply(cluster("expired", 4, 3, size=0))
    assert 4 not in {t.id for t in m.topics().topics} and m.topic(4).state == "expired"  # type: ignore[union-attr]


def test_search_matches_keywords_and_exemplar_case_insensitively() -> None:
    m = ReadModel()
    m.apply(cluster("created", 1, 1, keywords=["penguins", "zoo"], exemplar_id="a", exemplar_title="Zurich zoo"))
    m.apply(cluster("created", 2, 1, keywords=["election"], exemplar_id="b", exemplar_title="Polls close"))
    m.apply(assign("a", 1, T0))
    m.apply(assign("b", 2, T0))
    assert [t.id for t in m.topics(q="PENGUIN").topics] == [1]
    assert [t.id for t in m.topics(q="polls").topics] == [2]
    assert m.topics(q="nothing").total == 0


def test_events_decode_leniently_and_old_events_without_source_still_apply() -> None:
    event = assign("a", 1, T0, source="Reuters")
    payload = event.model_dump(mode="json") | {"a_field_from_a_newer_producer": 1}
    payload.pop("source")  # an event written before the field existed
    import json

    decoded = decode_event("assignment", json.dumps(payload).encode())
    assert isinstance(decoded, AssignmentEvent) and decoded.source is None
    m = ReadModel()
    m.apply(decoded)
    assert m.topic(1).sources == 0 and m.topic(1).size == 1  # type: ignore[union-attr]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(-1, 3), st.integers(0, 400)),  # headline, cluster, minute
        min_size=1,
        max_size=120,
    )
)
def test_incremental_counts_equal_a_full_rescan(stream: list[tuple[int, int, int]]) -> None:
    """After any stream of assignments: sizes, last-hour and previous-hour counts equal a recount."""
    m = ReadModel()
    times: dict[str, int] = {}
    final: dict[str, int] = {}
    for run, (h, cid, minute) in enumerate(stream, 1):
        hid = f"h{h}"
        t = times.setdefault(hid, T0 + minute * MIN)  # a headline's time never changes
        m.apply(assign(hid, cid, t, run=run, reason="recluster"))
        final[hid] = cid
    now = max(times.values())
    sizes = Counter(c for c in final.values() if c != NOISE)
    last = Counter(c for h, c in final.items() if c != NOISE and 0 <= (now // MIN - times[h] // MIN) < 60)
    prev = Counter(c for h, c in final.items() if c != NOISE and 60 <= (now // MIN - times[h] // MIN) < 120)
    for cid in range(4):
        topic = m.topic(cid)
        if topic is None:
            assert sizes[cid] == 0
            continue
        assert (topic.size, topic.last_hour, topic.previous_hour) == (sizes[cid], last[cid], prev[cid])
        assert sum(b.count for b in topic.timeline) == topic.size == topic.members.total
        assert sum(topic.sparkline) == sum(1 for h, c in final.items() if c == cid and now // HOUR_MS - times[h] // HOUR_MS < 12)


def test_history_keeps_the_last_twenty_events_and_still_drops_redelivered_copies() -> None:
    m = ReadModel()
    events = [assign("a", 1 + i % 3, T0, run=i + 1, reason="recluster") for i in range(25)]
    for event in events:
        m.apply(event)
    m.apply(events[-1])  # a redelivered copy of the latest
    view = m.headline("a")
    assert view is not None and [r.run_id for r in view.history] == list(range(6, 26))
    assert view.cluster_id == events[-1].cluster_id and m.topic(view.cluster_id).size == 1  # type: ignore[union-attr]
    assert sum(t.size for t in m.topics().topics) == 1


def test_a_source_learnt_later_is_counted_in_the_topic_once() -> None:
    m = ReadModel()
    m.apply(assign("a", 1, T0, source=None))
    m.apply(assign("a", 1, T0, run=2, source="AP", reason="recluster"))  # same topic, source now known
    assert m.topic(1).sources == 1 and m.topic(1).top_sources == [("AP", 1)]  # type: ignore[union-attr]
    m.apply(assign("a", 2, T0, run=3, source="AP", reason="recluster"))
    assert m.topic(1).sources == 0 and m.topic(2).top_sources == [("AP", 1)]  # type: ignore[union-attr]


def test_the_stored_headlines_cost_the_garbage_collector_nothing() -> None:
    """Headlines are kept as tuples of atomic values, which CPython stops tracking once a young
    collection saw them (the feed runs one per chunk): a full collection never scans the window."""
    import gc

    from streamer.adapters.kafka.feed import apply_chunk
    from streamer.domain.views import FeedProgress

    m = ReadModel(max_headlines=500)
    events = [("assignment", assign(f"h{i}", i % 7, T0 + i * MIN).model_dump_json().encode()) for i in range(800)]
    events += [("assignment", assign(f"h{i}", 9, T0 + i * MIN, run=2, reason="recluster").model_dump_json().encode())
               for i in range(700, 800)]
    progress = FeedProgress(source="test")
    for start in range(0, len(events), 256):
        apply_chunk(m, progress, events[start : start + 256])
    assert progress.applied == 900 and m.headline_count == 500
    stored = list(m._headlines.values())  # noqa: SLF001 (what the collector would scan)
    assert stored and not any(gc.is_tracked(h) for h in stored)
    assert m.headline("h799").history[-1].cluster_id == 9  # type: ignore[union-attr]
