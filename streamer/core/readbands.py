"""Headlines per topic in the last hour and the hour before, kept incrementally (for :mod:`streamer.readmodel`).

A topic is any object with ``id``, ``last_hour`` and ``previous_hour``; pure Python, no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Bands", "MINUTE_MS"]

MINUTE_MS = 60_000


class Bands:
    """Headlines per topic in the last hour and the hour before, kept as the clock moves.

    ``by_minute[m][topic]`` counts a topic's headlines in minute ``m``. When "now" moves to a
    later minute only the minutes that change band are revisited (at most 240, then a reset).
    """

    def __init__(self) -> None:
        self.by_minute: dict[int, dict[int, int]] = {}
        self.now_min: int | None = None

    def band(self, minute: int) -> int | None:
        """0: the last hour (now included), 1: the hour before, None: older (or no clock yet)."""
        if self.now_min is None:
            return None
        age = self.now_min - minute
        return 0 if 0 <= age < 60 else 1 if 60 <= age < 120 else None

    def count(self, topic: Any, minute: int, delta: int) -> None:
        counts = self.by_minute.get(minute)
        if counts is None:
            counts = self.by_minute[minute] = {}
        n = counts.get(topic.id, 0) + delta
        if n > 0:
            counts[topic.id] = n
        else:
            counts.pop(topic.id, None)
            if not counts:
                del self.by_minute[minute]
        _shift(topic, self.band(minute), delta)

    def advance(self, now_min: int, topics: dict[int, Any]) -> None:
        old = self.now_min
        if old is not None and now_min <= old:
            return
        self.now_min = now_min
        if old is None or now_min - old >= 60:
            for topic in topics.values():
                topic.last_hour = topic.previous_hour = 0
            for minute in range(now_min - 119, now_min + 1):
                for tid, n in self.by_minute.get(minute, {}).items():
                    _shift(topics[tid], self.band(minute), n)
            return
        # Less than an hour later: minutes (old-60, now-60] leave the last hour for the one
        # before, and minutes (old-120, now-120] leave that one.
        for minute in range(old - 59, now_min - 59):
            for tid, n in self.by_minute.get(minute, {}).items():
                topics[tid].last_hour -= n
                topics[tid].previous_hour += n
        for minute in range(old - 119, now_min - 119):
            for tid, n in self.by_minute.get(minute, {}).items():
                topics[tid].previous_hour -= n


def _shift(topic: Any, band: int | None, delta: int) -> None:
    if band == 0:
        topic.last_hour += delta
    elif band == 1:
        topic.previous_hour += delta
