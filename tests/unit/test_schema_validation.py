"""Input validation (every bad message gets a reason) and the published event schema."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.domain.events import (
    AssignmentEvent,
    AssignmentReason,
    AssignmentStatus,
    ClusterEvent,
    ClusterEventType,
)
from streamer.domain.headline import (
    Headline,
    HeadlineIn,
    RawRecord,
    content_id,
    to_epoch_ms,
)
from streamer.domain.validation import Rejection, RejectReason, parse_record


def _parse(value: bytes | None, max_bytes: int = 65_536) -> Headline | Rejection:
    return parse_record(RawRecord("t", 0, 0, None, value), max_bytes=max_bytes, ingested_at_ms=1)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, RejectReason.EMPTY),
        (b"", RejectReason.EMPTY),
        (b"\xff\xfe{}", RejectReason.INVALID_UTF8),
        (b"{not json", RejectReason.INVALID_JSON),
        (b"[1, 2]", RejectReason.NOT_AN_OBJECT),
        (b'{"id": "a"}', RejectReason.INVALID_FIELDS),
        (b'{"title": 5}', RejectReason.INVALID_FIELDS),
        (b'{"title": "   "}', RejectReason.INVALID_FIELDS),
        (b'{"title": "ok", "id": true}', RejectReason.INVALID_FIELDS),
        (b'{"title": "ok", "published_at": 99999999999999999}', RejectReason.INVALID_FIELDS),
        (b'{"title": "ok", "published_at": "yesterday"}', RejectReason.INVALID_FIELDS),
        (json.dumps({"title": "x" * 5000}).encode(), RejectReason.INVALID_FIELDS),
        (b"[" * 100_000, RejectReason.OVERSIZED),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(value: bytes | None, reason: RejectReason) -> None:
    """Each malformed message maps to one reason code and a message saying what is wrong."""
    result = _parse(value)
    assert isinstance(result, Rejection) and result.reason == reason and result.message


def test_deeply_nested_json_is_rejected_not_crashing() -> None:
    """Recursion depth errors in the JSON parser become a rejection."""
    assert isinstance(_parse(b"[" * 50_000 + b"]" * 50_000, max_bytes=10**6), Rejection)


def test_valid_message_becomes_a_headline() -> None:
    """Numeric ids are kept as text, ISO dates become epoch ms, blank description is None."""
    result = _parse(b'{"id": 7, "title": " Fed ", "description": " ", "published_at": "2024-04-25T18:24:04Z", "extra": 1}')
    assert isinstance(result, Headline)
    assert (result.id, result.title, result.description, result.published_at_ms) == ("7", "Fed", None, 1714069444000)


def test_missing_id_gets_a_content_hash() -> None:
    """Headlines without an id get a stable id derived from their content."""
    result = _parse(b'{"title": "Same"}')
    assert isinstance(result, Headline) and result.id == content_id("Same", None) == _parse(b'{"title": "Same"}').id


def test_epoch_seconds_and_milliseconds() -> None:
    """Seconds and milliseconds are told apart by magnitude."""
    assert to_epoch_ms(1714069444) == to_epoch_ms(1714069444000) == 1714069444000


def test_event_ids_are_deterministic() -> None:
    """The same re-assignment twice has the same event id; another run gives another id. A
    headline has one arrival event id, whatever snapshot a redelivered copy was placed against."""
    h = Headline(id="a", title="t")

    def make(run: int, cluster: int = 3, reason: AssignmentReason = AssignmentReason.RECLUSTER) -> AssignmentEvent:
        return AssignmentEvent.make(
            headline=h, cluster_id=cluster, status=AssignmentStatus.ASSIGNED, probability=0.5, run_id=run, reason=reason
        )

    assert make(1).event_id == make(1).event_id != make(2).event_id
    arrival = AssignmentReason.ARRIVAL
    assert make(1, 3, arrival).event_id == make(2, 5, arrival).event_id != make(1, 3).event_id
    other = AssignmentEvent.make(
        headline=Headline(id="b", title="t"), cluster_id=3, status=AssignmentStatus.ASSIGNED, probability=0.5,
        run_id=1, reason=arrival,
    )
    assert other.event_id != make(1, 3, arrival).event_id


@settings(max_examples=60, deadline=None)
@given(
    hid=st.text(min_size=1, max_size=40).filter(lambda s: s.strip() and "\x00" not in s and "\ufffd" not in s),
    title=st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and "\x00" not in s and "\ufffd" not in s),
    cluster=st.integers(-1, 10**6),
    prob=st.floats(0, 1),
    run=st.integers(0, 10**6),
)
def test_assignment_event_round_trips(hid: str, title: str, cluster: int, prob: float, run: int) -> None:
    """Any event serialises to JSON and parses back equal (the published schema)."""
    h = HeadlineIn(id=hid, title=title).to_headline(ingested_at_ms=0)
    event = AssignmentEvent.make(
        headline=h, cluster_id=cluster, status=AssignmentStatus.ASSIGNED, probability=prob, run_id=run, reason=AssignmentReason.RECLUSTER
    )
    assert AssignmentEvent.model_validate_json(event.to_json_bytes()) == event


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(list(ClusterEventType)),
    cid=st.integers(0, 10**6),
    merged=st.lists(st.integers(0, 10**6), max_size=5),
    keywords=st.lists(st.text(max_size=20), max_size=8),
)
def test_cluster_event_round_trips(kind: ClusterEventType, cid: int, merged: list[int], keywords: list[str]) -> None:
    """Lifecycle events round-trip through JSON."""
    event = ClusterEvent.make(type=kind, cluster_id=cid, run_id=1, size=3, keywords=keywords, merged_from=merged)
    assert ClusterEvent.model_validate_json(event.to_json_bytes()) == event
