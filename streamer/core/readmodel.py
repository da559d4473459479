"""The read model behind ``streamer serve``: the current topics and their headlines, from events.

It applies the events streamer publishes (``headline-assignments``, ``cluster-events``) in
the order of their partitions and answers the read API's queries. Pure and deterministic:
no I/O, no clock (time is the newest event time seen), no asyncio; the feeds in
:mod:`streamer.readfeed` hand it events and :mod:`streamer.api` asks it questions.

- **Membership** comes from assignment events: a headline's latest event names its topic.
  Events are keyed by headline id, so one headline's events are ordered; a duplicate
  (same event id, at-least-once delivery) is dropped.
- **Topics** take keywords, exemplar, lineage and state from cluster events. An id is never
  reused, so a topic merged or expired stays so even if its ``created`` event is read
  later (its partition lags). Assignments may name a topic before its ``created`` event:
  the topic exists from then on, without keywords.
- **Window**: like the re-clusterer, headlines older than ``window_ms`` before the newest
  event time, or beyond ``max_headlines`` (oldest first), leave the model: the service does
  not announce expiry per headline.
- **Built for ~100k headlines in ~1k topics**: each topic keeps its headlines sorted by
  time (first/last seen, newest-first pages and per-bucket counts by bisection) and its
  source counts; headlines per topic in the last hour and the hour before are kept by a
  minute index that moves only the minutes crossing a boundary when the clock advances.
  ``GET /api/topics`` then sorts ~1k precomputed numbers and never scans members.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sortedcontainers import SortedList

from streamer.core.readbands import MINUTE_MS, Bands
from streamer.domain.events import AssignmentEvent, ClusterEvent, ClusterEventType
from streamer.domain.headline import NOISE
from streamer.domain.views import (
    AssignmentRecord,
    HeadlineView,
    TopicDetail,
    TopicList,
    TopicSummary,
)

__all__ = ["ReadModel", "SORTS", "HOUR_MS"]

HOUR_MS = 60 * MINUTE_MS
SORTS = ("growth", "size", "recent")
_SPARK_HOURS = 12
_MAX_TIMELINE_BUCKETS = 240
_HISTORY_KEPT = 20


# A headline is one flat tuple of atomic values: (id, title, source, time_ms, cluster_id, status,
# probability) followed by its history, the 7 fields of each of its last assignment events
# (event_id, cluster_id, status, reason, run_id, probability, emitted_at_ms), oldest first.
# CPython's collector stops tracking a tuple whose items are all atomic the first time it
# examines it (nested tuples take one collection per level), so the ~100k headlines of a window
# add nothing to a full collection's scan; as objects they made a 150 ms pause every few seconds
# of a busy feed, which set the read API's p99.
_Headline = tuple
_ID, _TITLE, _SOURCE, _TIME, _CLUSTER, _STATUS, _PROB = range(7)
_HISTORY = 7  # index of the first record's first field
_RECORD = 7  # fields per record
_R_EVENT, _R_CLUSTER, _R_STATUS, _R_REASON, _R_RUN, _R_PROB, _R_EMITTED = range(_RECORD)


def _history(headline: _Headline) -> list[tuple[Any, ...]]:
    """A headline's records, oldest first."""
    return [headline[i : i + _RECORD] for i in range(_HISTORY, len(headline), _RECORD)]


@dataclass(slots=True)
class _Topic:
    id: int
    members: SortedList = field(default_factory=SortedList)  # (time_ms, headline id)
    size: int = 0
    hours: dict[int, int] = field(default_factory=dict)  # headlines per hour of event time
    sources: Counter[str] = field(default_factory=Counter)
    keywords: list[str] = field(default_factory=list)
    exemplar_id: str | None = None
    exemplar_title: str | None = None
    run_size: int | None = None
    emerging: bool = False
    state: str = "live"
    merged_from: set[int] = field(default_factory=set)
    merged_into: int | None = None
    split_from: int | None = None
    split_into: set[int] = field(default_factory=set)
    last_hour: int = 0
    previous_hour: int = 0
    search: str = ""


class ReadModel:
    """Current topics and headlines, from events; see the module docstring."""

    def __init__(self, *, window_ms: float | None = None, max_headlines: int | None = None) -> None:
        self.window_ms = window_ms
        self.max_headlines = max_headlines
        self.version = 0
        self.now_ms: int | None = None
        self._headlines: dict[str, _Headline] = {}
        self._topics: dict[int, _Topic] = {}
        self._by_time: SortedList = SortedList()  # (time_ms, headline id) of every headline
        self._bands = Bands()

    # -- applying events -----------------------------------------------------------------
    def apply(self, event: AssignmentEvent | ClusterEvent) -> None:
        if isinstance(event, AssignmentEvent):
            self.apply_assignment(event)
        else:
            self.apply_cluster(event)

    def apply_assignment(self, event: AssignmentEvent) -> None:
        hid = event.headline_id
        old = self._headlines.get(hid)
        if old is not None and event.event_id in old[_HISTORY + _R_EVENT :: _RECORD]:
            return  # a redelivered copy of an event already applied
        self.version += 1
        if old is None:
            time_ms = event.published_at_ms if event.published_at_ms is not None else event.emitted_at_ms
            self._advance(time_ms)
            if self._expired(time_ms):
                return
            title, source, history = event.title, event.source, ()
            self._by_time.add((time_ms, hid))
        else:
            title, source, time_ms = old[_TITLE], old[_SOURCE] or event.source, old[_TIME]
            history = old[_HISTORY + _RECORD :] if len(old) >= _HISTORY + _HISTORY_KEPT * _RECORD else old[_HISTORY:]
        status = str(event.status)
        new = (hid, title, source, time_ms, event.cluster_id, status, event.probability, *history,
               event.event_id, event.cluster_id, status, str(event.reason), event.run_id, event.probability,
               event.emitted_at_ms)
        if old is None or old[_CLUSTER] != event.cluster_id or old[_SOURCE] != source:
            if old is not None:
                self._leave(old)
            self._join(new)
        self._headlines[hid] = new
        self._expire()

    def apply_cluster(self, event: ClusterEvent) -> None:
        self.version += 1
        topic = self._topic(event.cluster_id)
        kind = event.type
        if kind == ClusterEventType.EXPIRED:
            topic.state = "expired" if topic.state == "live" else topic.state
            return
        if event.keywords or not topic.keywords:
            topic.keywords = list(event.keywords)
        if event.exemplar_id is not None:
            topic.exemplar_id, topic.exemplar_title = event.exemplar_id, event.exemplar_title
        topic.search = " ".join([*topic.keywords, topic.exemplar_title or ""]).lower()
        topic.run_size = event.size
        if kind == ClusterEventType.CREATED:
            topic.emerging = event.emerging
        elif kind == ClusterEventType.UPDATED:
            topic.emerging = False
        if event.split_from is not None:
            topic.split_from = event.split_from
            self._topic(event.split_from).split_into.add(topic.id)
        topic.split_into.update(event.split_into)
        for absorbed in event.merged_from:
            topic.merged_from.add(absorbed)
            gone = self._topic(absorbed)
            gone.state, gone.merged_into = "merged", topic.id

    def _topic(self, cluster_id: int) -> _Topic:
        topic = self._topics.get(cluster_id)
        if topic is None:
            topic = self._topics[cluster_id] = _Topic(cluster_id)
        return topic

    def _leave(self, headline: _Headline) -> None:
        """Take ``headline`` out of its topic's counts (noise: nothing to do)."""
        self._count(headline, -1)

    def _join(self, headline: _Headline) -> None:
        """Count ``headline`` in its topic (noise: nothing to do)."""
        self._count(headline, 1)

    def _count(self, headline: _Headline, delta: int) -> None:
        cluster_id = headline[_CLUSTER]
        if cluster_id == NOISE:
            return
        time_ms, source = headline[_TIME], headline[_SOURCE]
        hour = time_ms // HOUR_MS
        topic = self._topic(cluster_id)
        if delta > 0:
            topic.members.add((time_ms, headline[_ID]))
        else:
            topic.members.remove((time_ms, headline[_ID]))
        topic.size += delta
        in_hour = topic.hours.get(hour, 0) + delta
        if in_hour > 0:
            topic.hours[hour] = in_hour
        else:
            topic.hours.pop(hour, None)
        if source:
            from_source = topic.sources[source] + delta
            if from_source > 0:
                topic.sources[source] = from_source
            else:
                topic.sources.pop(source, None)
        self._bands.count(topic, time_ms // MINUTE_MS, delta)

    def _advance(self, time_ms: int) -> None:
        if self.now_ms is None or time_ms > self.now_ms:
            self.now_ms = time_ms
            self._bands.advance(time_ms // MINUTE_MS, self._topics)

    def _expired(self, time_ms: int) -> bool:
        return self.window_ms is not None and self.now_ms is not None and time_ms < self.now_ms - self.window_ms

    def _expire(self) -> None:
        """Headlines that left the window (by event time, then by count) leave the model."""
        while self._by_time and (
            self._expired(self._by_time[0][0])
            or (self.max_headlines is not None and len(self._by_time) > self.max_headlines)
        ):
            _, hid = self._by_time.pop(0)
            self._leave(self._headlines.pop(hid))

    # -- queries -------------------------------------------------------------------------
    @property
    def headline_count(self) -> int:
        return len(self._headlines)

    def live_topic_count(self) -> int:
        return sum(1 for t in self._topics.values() if t.state == "live" and t.size)

    def cluster_of(self, headline_id: str) -> int | None:
        headline = self._headlines.get(headline_id)
        return None if headline is None else headline[_CLUSTER]

    def title_of(self, headline_id: str) -> str | None:
        headline = self._headlines.get(headline_id)
        return None if headline is None else headline[_TITLE]

    def topics(self, *, sort: str = "growth", limit: int = 50, q: str | None = None, offset: int = 0) -> TopicList:
        """Live topics with headlines, ranked; ``q`` keeps those whose keywords or exemplar contain it."""
        return TopicList.model_validate(self.topics_document(sort=sort, limit=limit, q=q, offset=offset))

    def topic(self, cluster_id: int, *, offset: int = 0, limit: int = 50, bucket_ms: int | None = None) -> TopicDetail | None:
        """One topic with its newest headlines (paged) and a timeline; None for an id never seen."""
        document = self.topic_document(cluster_id, offset=offset, limit=limit, bucket_ms=bucket_ms)
        return None if document is None else TopicDetail.model_validate(document)

    def summary(self, cluster_id: int) -> TopicSummary | None:
        topic = self._topics.get(cluster_id)
        return None if topic is None else TopicSummary.model_validate(self._summary(topic))

    # The read API's answers are built as JSON-ready documents of the views' shape (the typed
    # methods above validate them into the views): a topic page costs a fifth of building
    # the pydantic models, which the API would only serialise again.
    def topics_document(self, *, sort: str = "growth", limit: int = 50, q: str | None = None, offset: int = 0) -> dict[str, Any]:
        """:meth:`topics` as a JSON-ready document (a :class:`TopicList`'s fields)."""
        if sort not in SORTS:
            raise ValueError(f"sort must be one of {SORTS}, got {sort!r}")
        needle = (q or "").strip().lower()
        chosen = [
            t for t in self._topics.values() if t.state == "live" and t.size and (not needle or needle in t.search)
        ]
        if sort == "growth":
            key = lambda t: (t.last_hour - t.previous_hour, t.last_hour, t.size, t.id)  # noqa: E731
        elif sort == "size":
            key = lambda t: (t.size, t.last_hour, t.id)  # noqa: E731
        else:
            key = lambda t: (t.members[-1][0], t.size, t.id)  # noqa: E731
        page = heapq.nlargest(offset + limit, chosen, key=key)[offset:]
        return {"version": self.version, "now_ms": self.now_ms, "total": len(chosen),
                "topics": [self._summary(t) for t in page]}

    def topic_document(self, cluster_id: int, *, offset: int = 0, limit: int = 50,
                       bucket_ms: int | None = None) -> dict[str, Any] | None:
        """:meth:`topic` as a JSON-ready document (a :class:`TopicDetail`'s fields); None for an unknown id."""
        topic = self._topics.get(cluster_id)
        if topic is None:
            return None
        members, headlines = topic.members, self._headlines
        page = members.islice(max(0, len(members) - offset - limit), max(0, len(members) - offset), reverse=True)
        items = []
        for _, hid in page:
            h = headlines[hid]
            items.append({"id": hid, "title": h[_TITLE], "source": h[_SOURCE], "time_ms": h[_TIME],
                          "probability": h[_PROB]})
        timeline: list[dict[str, int]] = []
        bucket = bucket_ms or HOUR_MS
        if members:
            first, last = members[0][0], members[-1][0]
            while (last - first) // bucket + 1 > _MAX_TIMELINE_BUCKETS:
                bucket *= 2
            start = first - first % bucket
            hours, span = topic.hours, bucket // HOUR_MS
            for begin in range(start, last + 1, bucket):
                if bucket % HOUR_MS:  # not whole hours: two bisections
                    count = self._between(topic, begin, begin + bucket)
                elif span == 1:  # the default: the hourly count itself
                    count = hours.get(begin // HOUR_MS, 0)
                else:
                    h0 = begin // HOUR_MS
                    count = sum(hours.get(h, 0) for h in range(h0, h0 + span))
                timeline.append({"start_ms": begin, "count": count})
        document = self._summary(topic)
        document.update(
            top_sources=topic.sources.most_common(10),
            run_size=topic.run_size,
            bucket_ms=bucket,
            timeline=timeline,
            members={"offset": offset, "limit": limit, "total": len(members), "items": items},
        )
        return document

    def headline(self, headline_id: str) -> HeadlineView | None:
        h = self._headlines.get(headline_id)
        if h is None:
            return None
        cluster_id = h[_CLUSTER]
        topic = self._topics.get(cluster_id) if cluster_id != NOISE else None
        return HeadlineView(
            id=h[_ID],
            title=h[_TITLE],
            source=h[_SOURCE],
            time_ms=h[_TIME],
            cluster_id=cluster_id,
            status=h[_STATUS],
            topic=TopicSummary.model_validate(self._summary(topic)) if topic is not None else None,
            history=[
                AssignmentRecord(
                    event_id=r[_R_EVENT], cluster_id=r[_R_CLUSTER], status=r[_R_STATUS], reason=r[_R_REASON],
                    run_id=r[_R_RUN], probability=r[_R_PROB], emitted_at_ms=r[_R_EMITTED],
                )
                for r in _history(h)
            ],
        )

    def _between(self, topic: _Topic, start_ms: int, end_ms: int) -> int:
        """Headlines of ``topic`` with start_ms <= time < end_ms (two bisections)."""
        return int(topic.members.bisect_left((end_ms,)) - topic.members.bisect_left((start_ms,)))

    def _summary(self, t: _Topic) -> dict[str, Any]:
        """A topic's :class:`TopicSummary` fields, JSON-ready."""
        members = t.members
        spark: list[int] = []
        if self.now_ms is not None and members:
            now_hour = self.now_ms // HOUR_MS
            spark = [t.hours.get(h, 0) for h in range(now_hour - _SPARK_HOURS + 1, now_hour + 1)]
        exemplar_id, exemplar_title = t.exemplar_id, t.exemplar_title
        if exemplar_title is None and members:  # no cluster event yet: its newest headline stands in
            exemplar_id = members[-1][1]
            exemplar_title = self._headlines[exemplar_id][_TITLE]
        return {
            "id": t.id,
            "state": t.state,
            "size": t.size,
            "keywords": t.keywords,
            "exemplar_id": exemplar_id,
            "exemplar_title": exemplar_title,
            "first_seen_ms": members[0][0] if members else None,
            "last_seen_ms": members[-1][0] if members else None,
            "last_hour": t.last_hour,
            "previous_hour": t.previous_hour,
            "growth": t.last_hour - t.previous_hour,
            "sources": len(t.sources),
            "emerging": t.emerging,
            "sparkline": spark,
            "lineage": {
                "merged_from": sorted(t.merged_from),
                "merged_into": t.merged_into,
                "split_from": t.split_from,
                "split_into": sorted(t.split_into),
            },
        }
