"""``POST /api/match``: the topic a new text would join now, by the ingest path's own pieces.

The text goes through the service's embedder and the store's ``search`` (``2k + 1``
neighbours, as :class:`~streamer.pipeline.IngestPipeline` asks), then through
:class:`~streamer.arrivals.ArrivalAssigner` against the latest snapshot, taken from the
state topic the way an ingest follower takes it (:func:`follow_snapshots`). The assigner
is a fresh one without a minter: a text that is only being asked about starts no topic and
follows no arrival; it gets the snapshot's rule (approximate predict, then the attach rule).

The model and the store are opened on first use, off the event loop, and opening is tried
again at the next request when it failed (a Milvus Lite file is held by the ``streamer
run`` process that writes it; a Milvus server is shared).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from streamer.config.settings import Settings
from streamer.core.arrivals import ArrivalAssigner, EmergingRule
from streamer.core.readmodel import ReadModel
from streamer.domain.errors import StreamerError
from streamer.domain.headline import NOISE, Headline
from streamer.domain.ports import Embedder, VectorStore
from streamer.domain.views import MatchAnswer, Neighbour
from streamer.observability.logs import get_logger
from streamer.service.concurrency import BlockingRunner
from streamer.service.snapshots import LiveSnapshot

__all__ = ["Matcher", "MatchUnavailable", ]

log = get_logger(__name__)


class MatchUnavailable(StreamerError):
    """/api/match cannot answer now (no snapshot yet, model or store not open); the message says why."""

    retriable = True


@dataclass(frozen=True)
class MatchParts:
    """The model and the store a match needs, opened by the composition root, and how to close them."""

    embedder: Embedder
    store: VectorStore
    close: Callable[[], None]


class Matcher:
    """Embed, search, assign, as ingest does; see the module docstring.

    ``connect`` (blocking, run off the event loop at the first match) opens the model and the
    store; a failure is answered as unavailable and tried again at the next match.
    """

    def __init__(self, settings: Settings, runner: BlockingRunner, connect: Callable[[], MatchParts]) -> None:
        self._settings = settings
        self._runner = runner
        self._connect = connect
        self._rule = EmergingRule(attach_similarity=settings.clustering.attach_similarity, emerging_min_size=0)
        self._parts: MatchParts | None = None
        self._opening = asyncio.Lock()
        self.snapshot: LiveSnapshot | None = None
        self.problem: str | None = None

    @property
    def status(self) -> str:
        if self.snapshot is None:
            return "no clustering snapshot on the state topic yet"
        return self.problem or ("ready" if self._parts is not None else "opens the model and store at first use")

    def take(self, live: LiveSnapshot) -> None:
        """A snapshot from the state topic: kept when newer than the one held."""
        if self.snapshot is None or live.snapshot.run_id > self.snapshot.snapshot.run_id:
            self.snapshot = live
            log.info("snapshot received", run_id=live.snapshot.run_id)

    async def _open(self) -> MatchParts:
        async with self._opening:
            if self._parts is None:
                try:
                    self._parts = await self._runner.run(self._connect)
                except StreamerError as exc:
                    self.problem = f"model or vector store unavailable: {exc}"
                    raise MatchUnavailable(self.problem) from exc
                self.problem = None
            return self._parts
    async def match(self, text: str, model: ReadModel) -> MatchAnswer:
        live = self.snapshot
        if live is None:
            raise MatchUnavailable("no clustering snapshot yet: the re-clusterer has not finished a run")
        parts = await self._open()
        embedder, store = parts.embedder, parts.store
        vectors = await self._runner.run(embedder.encode, [text])
        limit = 2 * self._settings.graph.k + 1
        try:
            found, sims = await self._runner.run(store.search, vectors, limit)
        except StreamerError as exc:
            raise MatchUnavailable(f"vector store search failed: {exc}") from exc
        probe = Headline(id="match:" + hashlib.sha256(text.encode()).hexdigest()[:16], title=text)
        outcome = ArrivalAssigner(self._rule).assign(live.snapshot, live.stable_ids, [probe], found, sims)
        placement = outcome.placements[0]
        neighbours = [
            Neighbour(id=hid, similarity=round(float(sim), 4), cluster_id=model.cluster_of(hid), title=model.title_of(hid))
            for hid, sim in zip(found[0], sims[0].tolist(), strict=False)
        ]
        cid = placement.cluster_id
        similarity = None
        if cid != NOISE:
            in_topic = [
                n.similarity for n, hid in zip(neighbours, found[0], strict=False)
                if n.cluster_id == cid or live.stable(live.snapshot.label_of(hid)) == cid
            ]
            similarity = max(in_topic) if in_topic else None
        return MatchAnswer(
            cluster_id=cid,
            similarity=similarity,
            probability=round(placement.probability, 4),
            how=placement.how,
            run_id=live.snapshot.run_id,
            topic=model.summary(cid) if cid != NOISE else None,
            neighbours=neighbours[:10],
        )

    def close(self) -> None:
        parts, self._parts = self._parts, None
        if parts is not None:
            parts.close()
