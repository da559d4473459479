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

from collections import Counter
from dataclasses import dataclass, field

from sortedcontainers import SortedList

from streamer.core.readbands import MINUTE_MS, Bands
from streamer.domain.events import AssignmentEvent, ClusterEvent, ClusterEventType
from streamer.domain.headline import NOISE
from streamer.domain.views import (
    AssignmentRecord,
    HeadlineView,
    Lineage,
    Member,
    MemberPage,
    TimelineBucket,
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


@dataclass(slots=True, frozen=True)
class _Record:
    """One assignment event of a headline (an :class:`AssignmentRecord` when asked for)."""

    event_id: str
    cluster_id: int
    status: str
    reason: str
    run_id: int
    probability: float
    emitted_at_ms: int


@dataclass(slots=True)
class _Headline:
    id: str
    title: str
    source: str | None
    time_ms: int
    cluster_id: int = NOISE
    status: str = "unassigned"
    probability: float = 0.0
    history: list[_Record] = field(default_factory=list)


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
        headline = self._headlines.get(event.headline_id)
        if headline is not None and any(r.event_id == event.event_id for r in headline.history):
            return  # a redelivered copy of an event already applied
        self.version += 1
        if headline is None:
            time_ms = event.published_at_ms if event.published_at_ms is not None else event.emitted_at_ms
            self._advance(time_ms)
            if self._expired(time_ms):
                return
            headline = _Headline(event.headline_id, event.title, event.source, time_ms)
            self._headlines[headline.id] = headline
            self._by_time.add((time_ms, headline.id))
        elif event.source and not headline.source:
            headline.source = event.source
        status = str(event.status)
        record = _Record(
            event.event_id, event.cluster_id, status, str(event.reason), event.run_id, event.probability, event.emitted_at_ms
        )
        history = headline.history
        history.append(record)
        if len(history) > _HISTORY_KEPT:
            del history[0]
        self._move(headline, event.cluster_id)
        headline.status = status
        headline.probability = event.probability
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

    def _move(self, headline: _Headline, cluster_id: int) -> None:
        if headline.cluster_id == cluster_id:
            return
        minute = headline.time_ms // MINUTE_MS
        hour = headline.time_ms // HOUR_MS
        if headline.cluster_id != NOISE:
            old = self._topics[headline.cluster_id]
            old.members.remove((headline.time_ms, headline.id))
            old.size -= 1
            left = old.hours[hour] - 1
            if left:
                old.hours[hour] = left
            else:
                del old.hours[hour]
            if headline.source:
                old.sources[headline.source] -= 1
                if old.sources[headline.source] <= 0:
                    del old.sources[headline.source]
            self._bands.count(old, minute, -1)
        headline.cluster_id = cluster_id
        if cluster_id != NOISE:
            new = self._topic(cluster_id)
            new.members.add((headline.time_ms, headline.id))
            new.size += 1
            new.hours[hour] = new.hours.get(hour, 0) + 1
            if headline.source:
                new.sources[headline.source] += 1
            self._bands.count(new, minute, 1)

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
            headline = self._headlines.pop(hid)
            self._move(headline, NOISE)

    # -- queries -------------------------------------------------------------------------
    @property
    def headline_count(self) -> int:
        return len(self._headlines)

    def live_topic_count(self) -> int:
        return sum(1 for t in self._topics.values() if t.state == "live" and t.size)

    def cluster_of(self, headline_id: str) -> int | None:
        headline = self._headlines.get(headline_id)
        return None if headline is None else headline.cluster_id

    def title_of(self, headline_id: str) -> str | None:
        headline = self._headlines.get(headline_id)
        return None if headline is None else headline.title

    def topics(self, *, sort: str = "growth", limit: int = 50, q: str | None = None, offset: int = 0) -> TopicList:
        """Live topics with headlines, ranked; ``q`` keeps those whose keywords or exemplar contain it."""
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
        chosen.sort(key=key, reverse=True)
        page = chosen[offset : offset + limit]
        return TopicList(
            version=self.version, now_ms=self.now_ms, total=len(chosen), topics=[self._summary(t) for t in page]
        )

    def topic(self, cluster_id: int, *, offset: int = 0, limit: int = 50, bucket_ms: int | None = None) -> TopicDetail | None:
        """One topic with its newest headlines (paged) and a timeline; None for an id never seen."""
        topic = self._topics.get(cluster_id)
        if topic is None:
            return None
        members = topic.members
        page = list(members.islice(max(0, len(members) - offset - limit), max(0, len(members) - offset), reverse=True))
        items = []
        for _, hid in page:
            h = self._headlines[hid]
            items.append(Member(id=h.id, title=h.title, source=h.source, time_ms=h.time_ms, probability=h.probability))
        timeline: list[TimelineBucket] = []
        bucket = bucket_ms or HOUR_MS
        if members:
            first, last = members[0][0], members[-1][0]
            while (last - first) // bucket + 1 > _MAX_TIMELINE_BUCKETS:
                bucket *= 2
            start = first - first % bucket
            hours = topic.hours
            for begin in range(start, last + 1, bucket):
                if bucket % HOUR_MS == 0:  # whole hours: from the hourly counts, no bisection
                    h0 = begin // HOUR_MS
                    count = sum(hours.get(h, 0) for h in range(h0, h0 + bucket // HOUR_MS))
                else:
                    count = self._between(topic, begin, begin + bucket)
                timeline.append(TimelineBucket(start_ms=begin, count=count))
        return TopicDetail(
            **self._summary(topic).model_dump(),
            top_sources=topic.sources.most_common(10),
            run_size=topic.run_size,
            bucket_ms=bucket,
            timeline=timeline,
            members=MemberPage(offset=offset, limit=limit, total=len(members), items=items),
        )

    def headline(self, headline_id: str) -> HeadlineView | None:
        h = self._headlines.get(headline_id)
        if h is None:
            return None
        topic = self._topics.get(h.cluster_id) if h.cluster_id != NOISE else None
        return HeadlineView(
            id=h.id,
            title=h.title,
            source=h.source,
            time_ms=h.time_ms,
            cluster_id=h.cluster_id,
            status=h.status,
            topic=self._summary(topic) if topic is not None else None,
            history=[
                AssignmentRecord(
                    event_id=r.event_id, cluster_id=r.cluster_id, status=r.status, reason=r.reason,
                    run_id=r.run_id, probability=r.probability, emitted_at_ms=r.emitted_at_ms,
                )
                for r in h.history
            ],
        )

    def summary(self, cluster_id: int) -> TopicSummary | None:
        topic = self._topics.get(cluster_id)
        return None if topic is None else self._summary(topic)

    def _between(self, topic: _Topic, start_ms: int, end_ms: int) -> int:
        """Headlines of ``topic`` with start_ms <= time < end_ms (two bisections)."""
        return int(topic.members.bisect_left((end_ms,)) - topic.members.bisect_left((start_ms,)))

    def _summary(self, t: _Topic) -> TopicSummary:
        members = t.members
        spark: list[int] = []
        if self.now_ms is not None and members:
            now_hour = self.now_ms // HOUR_MS
            spark = [t.hours.get(h, 0) for h in range(now_hour - _SPARK_HOURS + 1, now_hour + 1)]
        exemplar_id, exemplar_title = t.exemplar_id, t.exemplar_title
        if exemplar_title is None and members:  # no cluster event yet: its newest headline stands in
            exemplar_id = members[-1][1]
            exemplar_title = self._headlines[exemplar_id].title
        return TopicSummary(
            id=t.id,
            state=t.state,  # type: ignore[arg-type]
            size=t.size,
            keywords=t.keywords,
            exemplar_id=exemplar_id,
            exemplar_title=exemplar_title,
            first_seen_ms=members[0][0] if members else None,
            last_seen_ms=members[-1][0] if members else None,
            last_hour=t.last_hour,
            previous_hour=t.previous_hour,
            growth=t.last_hour - t.previous_hour,
            sources=len(t.sources),
            emerging=t.emerging,
            sparkline=spark,
            lineage=Lineage(
                merged_from=sorted(t.merged_from),
                merged_into=t.merged_into,
                split_from=t.split_from,
                split_into=sorted(t.split_into),
            ),
        )
