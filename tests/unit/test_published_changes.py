"""Only changes of what downstream holds are published: unassigned -> noise is a change, and a
restart does not re-publish the noise of the restored window (issue #17, item 5)."""

from __future__ import annotations

from streamer.core.publishing import republish
from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ReclusterConfig
from streamer.domain.events import AssignmentEvent, AssignmentReason, AssignmentStatus
from streamer.domain.headline import NOISE, Headline
from streamer.service.recluster import Reclusterer
from streamer.service.snapshots import STATE_SNAPSHOT_KEY, SnapshotHolder, encode_state


def _unassigned(hid: str) -> AssignmentEvent:
    return AssignmentEvent.make(
        headline=Headline(id=hid, title=hid), cluster_id=NOISE, status=AssignmentStatus.UNASSIGNED,
        probability=0.0, run_id=0, reason=AssignmentReason.ARRIVAL,
    )


def test_a_headline_published_unassigned_needs_an_event_when_a_run_makes_it_noise() -> None:
    """Unassigned and noise are different statuses downstream: the run's noise is news."""
    holder = SnapshotHolder()
    holder.record_published([_unassigned("a")])
    assert republish([NOISE, 4], [holder.published("a")] * 2, [0, 0], None) == [0, 1]


def test_a_headline_published_as_noise_needs_no_event_for_noise_again() -> None:
    """Noise stays noise: nothing to publish."""
    holder = SnapshotHolder()
    holder.record_published(
        [AssignmentEvent.for_cluster(headline=Headline(id="a", title="a"), cluster_id=NOISE, probability=0.0,
                                     run_id=1, reason=AssignmentReason.RECLUSTER)]
    )
    assert republish([NOISE, 3], [holder.published("a")] * 2, [0, 0], None) == [1]


def test_restore_seeds_what_the_last_run_published_noise_included() -> None:
    """After a restart the window's noise and members count as published: no event unless they move."""
    state = {
        "version": 1, "run_id": 3, "min_samples": 2, "attach_similarity": 0.0,
        "ids": ["n", "m1", "m2"], "labels": [-1, 0, 0], "probabilities": [0.0, 1.0, 1.0],
        "core": [0.1, 0.1, 0.1], "reach": [0.5], "tight": [0.1], "stable_ids": [7],
    }
    holder = SnapshotHolder()
    reclusterer = Reclusterer(store=None, sink=None, runner=None, holder=holder, registry=ClusterRegistry(),  # type: ignore[arg-type]
                              metrics=None, config=ReclusterConfig(), dim=8, window=object())  # type: ignore[arg-type]
    reclusterer.restore({STATE_SNAPSHOT_KEY: encode_state(state)})
    held = [holder.published(h) for h in ("n", "m1", "m1", "new")]
    # n stays noise, m1 stays in 7 (nothing to publish), m1 to noise is a change; "new" was never published
    assert republish([NOISE, 7, NOISE, NOISE], held, [0, 0, 0, 0], None) == [2, 3]


def test_what_was_published_is_bounded_oldest_first() -> None:
    """Past ``max_tracked`` the oldest headline is forgotten; the newest stay."""
    holder = SnapshotHolder(max_tracked=2)
    holder.record_published([_unassigned("a"), _unassigned("b"), _unassigned("c")])
    assert list(holder.last_assigned) == ["b", "c"]
    holder.record_published([_unassigned("b"), _unassigned("d")])  # b published again: newest now
    assert list(holder.last_assigned) == ["b", "d"]
