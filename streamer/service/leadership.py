"""The re-clusterer's leadership as one instance holds it: elected, and under which epoch.

The election (a Kafka group, :class:`streamer.adapters.kafka.election.LeaderElection`) says
who *should* lead; it cannot stop a deposed leader whose run is already computing. The epoch
does: every takeover claims an epoch above every epoch it has seen (the state topic's latest
claim, registry and observed records), writes the claim to the state topic before its first
run, and stamps it on what it persists and publishes. An instance that observes a higher claim
on the state topic, or loses the election, is deposed: :meth:`Leadership.check` raises
:class:`Deposed` and the run in flight persists and publishes nothing. A consumer can apply the
same rule to events (drop a leader event whose ``leader_epoch`` is below the highest seen).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from streamer.domain.events import AssignmentEvent, ClusterEvent
from streamer.observability.logs import get_logger

__all__ = ["Claim", "Deposed", "Leadership", "LEADER_KEY", "encode_claim", "decode_claim", "with_epoch"]

log = get_logger(__name__)

#: State-topic key of the latest leader claim (:class:`Claim`).
LEADER_KEY = b"leader"


class Deposed(RuntimeError):
    """This instance no longer holds the leadership (and epoch) its work started under."""


@dataclass(frozen=True)
class Claim:
    """A leader's record: its epoch and owner, and the counters it had persisted (a floor for any
    later reader, should a deposed leader's late write replace the registry record)."""

    epoch: int
    owner: str = ""
    next_id: int = 0
    run_id: int = 0

    @property
    def rank(self) -> tuple[int, str]:
        """Claims compare by epoch, then owner: two takeovers that read the same claim never tie."""
        return (self.epoch, self.owner)


def encode_claim(claim: Claim) -> bytes:
    return json.dumps(
        {"epoch": claim.epoch, "owner": claim.owner, "next_id": claim.next_id, "run_id": claim.run_id}
    ).encode()


def decode_claim(value: bytes) -> Claim:
    """A claim record; epoch 0 for one that cannot be read (it then fences nobody)."""
    try:
        data: Any = json.loads(value)
        return Claim(
            int(data["epoch"]), str(data.get("owner", "")), int(data.get("next_id", 0)), int(data.get("run_id", 0))
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("unreadable leader claim on the state topic", value=value[:100].decode(errors="replace"))
        return Claim(0)


class Leadership:
    """Elected (a term of the election) and claimed (an epoch of its own); both are needed to act.

    ``term()`` is 0 while not elected and a number that changes with every election won, so a
    lost-and-regained leadership is a new term that takes over (reads the state) again.
    """

    def __init__(self, term: Callable[[], int] = lambda: 1, *, owner: str | None = None) -> None:
        self._term = term
        self._claimed_term = 0
        #: Who this instance is in claims (ties between equal epochs break on it).
        self.owner = owner or uuid.uuid4().hex
        #: The epoch this instance claimed for its current term; None when not leading.
        self.epoch: int | None = None
        #: The highest claim seen anywhere (state topic, restored state), as (epoch, owner).
        self.newest_seen: tuple[int, str] = (0, "")
        #: The epoch whose takeover finished (state read after the grace): only then does it act.
        self._taken: int | None = None

    @classmethod
    def from_flag(cls, is_leader: Callable[[], bool]) -> Leadership:
        """For a plain "am I the leader" callable (one term while it says yes)."""
        return cls(lambda: 1 if is_leader() else 0)

    @property
    def _ours(self) -> tuple[int, str]:
        return (self.epoch if self.epoch is not None else -1, self.owner)

    def elected(self) -> bool:
        return self._term() > 0

    def needs_takeover(self) -> bool:
        """Elected, and not holding a finished takeover for this term (no claim yet, a new term, a
        takeover that failed half-way, or a newer claim seen while the election still says this
        instance leads: the other is the deposed one)."""
        term = self._term()
        return term > 0 and (
            self.epoch is None
            or term != self._claimed_term
            or self.newest_seen > self._ours
            or self._taken != self.epoch
        )

    def observe(self, claim: Claim) -> None:
        """A claim seen on the state topic; one ranked above ours deposes us."""
        if claim.rank > self.newest_seen:
            self.newest_seen = claim.rank
            if self.epoch is not None and claim.rank > self._ours:
                log.warning("a newer leader claimed the re-clusterer", ours=self.epoch, theirs=claim.epoch)

    def claim(self, floor: int = 0) -> int:
        """Start a term: an epoch above ``floor`` and every claim seen so far."""
        self._claimed_term = self._term()
        self.epoch = max(floor, self.newest_seen[0]) + 1
        self.newest_seen = self._ours
        return self.epoch

    def confirm(self, epoch: int) -> None:
        """The takeover of ``epoch`` is done: what the last leader persisted is loaded."""
        self.check(epoch)
        self._taken = epoch

    def leads(self) -> bool:
        """Holds the claim and finished its takeover: may place, mint and publish outside a run.

        Between the claim and the end of the takeover the registry is the one read before the
        claim; a deposed leader may still mint from it then, so nothing may be minted from it.
        """
        return self.holds() and self._taken is not None and self._taken == self.epoch

    def holds(self) -> bool:
        """Elected in the claimed term, and nobody claimed above us since."""
        return (
            self.epoch is not None
            and self.newest_seen <= self._ours
            and self._claimed_term > 0
            and self._term() == self._claimed_term
        )

    def check(self, epoch: int) -> None:
        """Raise :class:`Deposed` unless this instance still leads under ``epoch``."""
        if self.epoch != epoch or not self.holds():
            raise Deposed(f"leadership of epoch {epoch} is gone (claimed {self.epoch}, newest seen {self.newest_seen})")


_Event = TypeVar("_Event", AssignmentEvent, ClusterEvent)


def with_epoch(events: Iterable[_Event], epoch: int) -> list[_Event]:
    """Copies of ``events`` carrying the leader's ``epoch``, by which downstream fences a deposed leader's."""
    return [e.model_copy(update={"leader_epoch": epoch}) for e in events]
