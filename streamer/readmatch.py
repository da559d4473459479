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
from typing import Any

from streamer.arrivals import ArrivalAssigner, EmergingRule
from streamer.concurrency import BlockingRunner
from streamer.config import Settings
from streamer.errors import StreamerError
from streamer.logs import get_logger
from streamer.pipeline import LiveSnapshot
from streamer.readmodel import ReadModel
from streamer.readviews import MatchAnswer, Neighbour
from streamer.schema import NOISE, Embedder, Headline, VectorStore

__all__ = ["Matcher", "MatchUnavailable", "follow_snapshots"]

log = get_logger(__name__)


class MatchUnavailable(StreamerError):
    """/api/match cannot answer now (no snapshot yet, model or store not open); the message says why."""

    retriable = True


class Matcher:
    """Embed, search, assign, as ingest does; see the module docstring."""

    def __init__(self, settings: Settings, runner: BlockingRunner) -> None:
        self._settings = settings
        self._runner = runner
        self._rule = EmergingRule(attach_similarity=settings.clustering.attach_similarity, emerging_min_size=0)
        self._embedder: Embedder | None = None
        self._store: VectorStore | None = None
        self._opening = asyncio.Lock()
        self.snapshot: LiveSnapshot | None = None
        self.problem: str | None = None

    @property
    def status(self) -> str:
        if self.snapshot is None:
            return "no clustering snapshot on the state topic yet"
        return self.problem or ("ready" if self._store is not None else "opens the model and store at first use")

    def take(self, live: LiveSnapshot) -> None:
        """A snapshot from the state topic: kept when newer than the one held."""
        if self.snapshot is None or live.snapshot.run_id > self.snapshot.snapshot.run_id:
            self.snapshot = live
            log.info("snapshot received", run_id=live.snapshot.run_id)

    async def _open(self) -> tuple[Embedder, VectorStore]:
        async with self._opening:
            if self._embedder is None:
                from streamer.embedding import FlagEmbedder

                self._embedder = await self._runner.run(FlagEmbedder, self._settings.embedding)
            if self._store is None:
                from streamer.store import MilvusStore

                store = MilvusStore(self._settings.milvus, self._embedder.dim)
                try:
                    await self._runner.run(store.open)
                except StreamerError as exc:
                    self.problem = f"vector store unavailable: {exc}"
                    raise MatchUnavailable(self.problem) from exc
                self._store, self.problem = store, None
            return self._embedder, self._store

    async def match(self, text: str, model: ReadModel) -> MatchAnswer:
        live = self.snapshot
        if live is None:
            raise MatchUnavailable("no clustering snapshot yet: the re-clusterer has not finished a run")
        embedder, store = await self._open()
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
        store, self._store = self._store, None
        if store is not None:
            store.close()  # type: ignore[attr-defined]
        embedder, self._embedder = self._embedder, None
        if embedder is not None and hasattr(embedder, "close"):
            embedder.close()


async def follow_snapshots(settings: Settings, matcher: Matcher, runner: BlockingRunner, stop: asyncio.Event) -> None:
    """The latest snapshot from the state topic, then every new one, into ``matcher`` (as ingest followers do)."""
    from streamer.kafka_io import follow_state, read_state
    from streamer.recluster import STATE_SNAPSHOT_KEY, decode_state, snapshot_from_state

    topic = settings.tracking.state_topic
    pending: set[asyncio.Task[None]] = set()

    async def take(value: bytes) -> None:
        try:  # decoding a large window's snapshot is seconds of JSON: off the event loop
            matcher.take(await runner.run(lambda: snapshot_from_state(decode_state(value))))
        except Exception as exc:  # a bad record keeps the snapshot held
            log.error("snapshot from the state topic could not be decoded", error=str(exc)[:300])

    def on_record(key: bytes, value: bytes) -> None:
        if key == STATE_SNAPSHOT_KEY:
            task = asyncio.create_task(take(value), name="snapshot-decode")
            pending.add(task)
            task.add_done_callback(pending.discard)

    state: dict[bytes, Any] = await read_state(settings.kafka, topic)
    if STATE_SNAPSHOT_KEY in state:
        await take(state[STATE_SNAPSHOT_KEY])
    await follow_state(settings.kafka, topic, on_record, stop)
