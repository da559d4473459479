"""What the read API answers: the JSON shapes of ``streamer serve`` (pydantic, so they are also
the OpenAPI document). Built by :mod:`streamer.readmodel` and :mod:`streamer.api`; no logic here.

Times are epoch milliseconds of *event time* (a headline's ``published_at``, else when it was
published as an event), and "now" is the newest event time seen, so a replayed stream reads
like a live one (as the re-clusterer's window does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "TopicState",
    "TopicsQuery",
    "TopicQuery",
    "Lineage",
    "TopicSummary",
    "TopicList",
    "Member",
    "MemberPage",
    "TimelineBucket",
    "TopicDetail",
    "AssignmentRecord",
    "HeadlineView",
    "MatchRequest",
    "Neighbour",
    "MatchAnswer",
    "FeedStatus",
    "ErrorBody",
    "FieldError",
]

TopicState = Literal["live", "merged", "expired"]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class TopicsQuery(BaseModel):
    """The query of ``GET /api/topics``."""

    sort: Literal["growth", "size", "recent"] = "growth"
    limit: int = Field(50, ge=1, le=1000)
    offset: int = Field(0, ge=0)
    q: str | None = Field(None, max_length=200, description="Text the keywords or exemplar contain")


class TopicQuery(BaseModel):
    """The query of ``GET /api/topics/{id}``."""

    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)
    bucket_minutes: int = Field(60, ge=1, le=7 * 24 * 60)


class Lineage(_View):
    merged_from: list[int] = Field(default_factory=list, description="Topics absorbed into this one.")
    merged_into: int | None = Field(None, description="The topic this one was absorbed into (state 'merged').")
    split_from: int | None = Field(None, description="The topic this one was carved out of.")
    split_into: list[int] = Field(default_factory=list, description="Topics carved out of this one.")


class TopicSummary(_View):
    id: int
    state: TopicState
    size: int = Field(description="Headlines of the window currently in the topic.")
    keywords: list[str]
    exemplar_id: str | None
    exemplar_title: str | None
    first_seen_ms: int | None = Field(description="Event time of the topic's oldest current headline.")
    last_seen_ms: int | None = Field(description="Event time of the topic's newest current headline.")
    last_hour: int = Field(description="Headlines in the hour up to now (event time).")
    previous_hour: int = Field(description="Headlines in the hour before that.")
    growth: int = Field(description="last_hour - previous_hour: how fast the story is growing.")
    sources: int = Field(description="Distinct sources (newsrooms) among the current headlines.")
    emerging: bool = Field(description="Started between runs from a few arrivals; the next run confirms it.")
    sparkline: list[int] = Field(description="Headlines per clock hour (UTC, event time) over the last 12, oldest first; the last is the current hour.")
    lineage: Lineage


class TopicList(_View):
    version: int = Field(description="Events applied so far; changes whenever the answer may.")
    now_ms: int | None = Field(description="Newest event time seen (the clock of growth and sparklines).")
    total: int = Field(description="Live topics matching the query (before the limit).")
    topics: list[TopicSummary]


class Member(_View):
    id: str
    title: str
    source: str | None
    time_ms: int
    probability: float


class MemberPage(_View):
    offset: int
    limit: int
    total: int
    items: list[Member] = Field(description="Newest first.")


class TimelineBucket(_View):
    start_ms: int
    count: int


class TopicDetail(TopicSummary):
    top_sources: list[tuple[str, int]] = Field(description="Most frequent sources and their headline counts.")
    run_size: int | None = Field(description="Size the last re-clustering run gave it (members since then excluded).")
    bucket_ms: int
    timeline: list[TimelineBucket] = Field(description="Current headlines per bucket, first to last seen.")
    members: MemberPage


class AssignmentRecord(_View):
    event_id: str
    cluster_id: int
    status: str
    reason: str
    run_id: int
    probability: float
    emitted_at_ms: int


class HeadlineView(_View):
    id: str
    title: str
    source: str | None
    time_ms: int
    cluster_id: int = Field(description="Current topic id, -1 for noise or before the first clustering.")
    status: str
    topic: TopicSummary | None
    history: list[AssignmentRecord] = Field(description="Assignment events of this headline, oldest first.")


class MatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=10_000, description="Headline text (title, optionally a description).")


class Neighbour(_View):
    id: str
    similarity: float
    cluster_id: int | None = Field(description="Its current topic per the events (None: not in the read model).")
    title: str | None


class MatchAnswer(_View):
    cluster_id: int = Field(description="The topic the text would join now, -1 when it would be noise.")
    similarity: float | None = Field(description="Cosine similarity to the closest headline of that topic among its neighbours.")
    probability: float
    how: str = Field(description="How the ingest rule placed it: 'snapshot' or 'noise'.")
    run_id: int = Field(description="Run of the snapshot used.")
    topic: TopicSummary | None
    neighbours: list[Neighbour]


class FeedStatus(_View):
    source: str
    caught_up: bool
    events: int
    version: int
    topics: int
    headlines: int
    now_ms: int | None
    snapshot_run: int | None
    match: str = Field(description="'ready', or why /api/match cannot answer now.")


class FieldError(_View):
    field: str
    location: str
    message: str


class ErrorBody(_View):
    status: int
    error: str
    fields: list[FieldError] = Field(default_factory=list)


@dataclass
class FeedProgress:
    """What the feed has done; read by /readyz and /api/status."""

    source: str
    caught_up: bool = False
    applied: int = 0
    rejected: int = 0


