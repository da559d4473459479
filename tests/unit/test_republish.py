"""Which headlines a re-clustering run re-publishes: changes, and settled headlines keeping their topic."""

from __future__ import annotations

from streamer.core.publishing import republish
from streamer.domain.headline import NOISE, UNASSIGNED

HOUR = 3_600_000


def test_unchanged_headlines_are_not_republished() -> None:
    """Run cluster equal to the published one (topic or noise) -> nothing to publish: []."""
    assert republish([3, NOISE], [3, NOISE], [0, 0], None) == []


def test_every_change_is_published_without_settling() -> None:
    """settled_before_ms None: topic -> other, topic -> noise, noise -> topic, never published -> noise: all four."""
    assert republish([4, NOISE, 5, NOISE], [3, 3, NOISE, UNASSIGNED], [0, 0, 0, 0], None) == [0, 1, 2, 3]


def test_a_settled_headline_keeps_its_topic() -> None:
    """Published in topic 3, older than the settle line, run says topic 4 or noise -> not re-published: []."""
    assert republish([4, NOISE], [3, 3], [1 * HOUR, 1 * HOUR], 2 * HOUR) == []


def test_a_young_headline_still_moves() -> None:
    """Published in topic 3 at or after the settle line, run says topic 4 -> re-published: [0]."""
    assert republish([4], [3], [2 * HOUR], 2 * HOUR) == [0]


def test_a_settled_noise_headline_still_gets_its_topic() -> None:
    """Published as noise (or never), older than the settle line, run clusters it -> re-published: [0, 1]."""
    assert republish([4, 5], [NOISE, UNASSIGNED], [0, 0], 2 * HOUR) == [0, 1]


def test_a_settled_headline_of_unknown_topic_is_not_sent_to_noise() -> None:
    """Published topic unknown (UNASSIGNED: a restart), settled, run says noise -> not re-published: []."""
    assert republish([NOISE], [UNASSIGNED], [0], 2 * HOUR) == []
