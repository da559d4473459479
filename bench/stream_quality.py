"""Replay a labelled headline stream through streamer's ingest loop and re-clusterer; score what was published.

The service's own code runs: each micro-batch goes through ``IngestPipeline._process_valid``
(store, neighbour search, arrival placement with emerging topics, the events it publishes) and
each re-clustering through ``Reclusterer.run_once`` (window upkeep, HDBSCAN, snapshot, id
tracking, lifecycle events, the re-assignment events of changed headlines). Kafka and Milvus are
replaced by in-memory stand-ins that change no label: the events land in a recorder, the store
is an exact inner-product search over the stored rows (expired rows deleted, as the service
deletes them), or streamer's own search mirror (``--mirror-exact-below``). Labels (STORY ids)
never reach the service: they are only used to score.

Data (``--data FILE``, default UCI part 01; ``--skip``/``--rows`` pick the rows): any CSV, TSV
or JSONL file ``streamer cluster`` reads, with a label column (STORY, story or label).

Arrival order (``--arrivals``):
- ``blocks`` (default): each label's rows come as one contiguous block at its onset (its first
  row's time), keeping their own offsets up to 60 s: UCI as it is (one crawl time per story);
- ``interleaved``: each label keeps its onset; every later row arrives at onset + a lognormal
  delay (``--delay-median-h`` 4, ``--delay-sigma`` 1.2, capped at ``--delay-cap-h`` 72), drawn
  with a fixed ``--seed``: stories overlap for hours or days, as on a live feed;
- ``file``: the file's order and timestamps as they are.

Two paces (``--pace``):
- ``backlog`` (default): the stream is read as fast as it can be, in 64-headline batches, so the
  count triggers decide every run (``--every`` arrivals, ``--every-noise`` unplaced ones);
- ``stream``: the stream's own clock stands in for the wall clock: a micro-batch closes after
  ``kafka.max_batch_wait_ms`` of stream time or at 64 headlines, and the
  ``tracking.recluster_interval_s`` timer (``--interval-s``) fires as well as the count triggers.

Reported (docs/benchmarks.md), one JSON object:
- live quality: B-cubed F1 / AMI / noise share of the cluster each headline was *last published
  with* (arrival, emerging or re-assignment events; noise counted as singletons), vs the labels;
  ``live_bcubed_precision`` / ``live_bcubed_recall``: the two sides of that F1 (low precision:
  topics that hold several labels; low recall: labels spread over several topics or noise);
- ``window_bcubed_f1_mean``: mean B-cubed F1 of each run's window clustering;
  ``window_published_f1_mean``: the same windows scored with what downstream holds for their
  headlines right after the run's events (equal when every change was published);
  ``unpublished_changes``: headlines whose run label differs from their last published one
  after the run's events (summed over runs), apart from ``settled_kept``: headlines settled in a
  topic (``tracking.settle_s``) that keep it although the run put them elsewhere;
- ``ids_per_story`` (mean / p90): distinct topic ids among the last published labels of a
  label's rows (labels with at least one clustered row); ``ids_per_story_major``: only the ids
  holding >= 10% of the label's rows (a batch clustering of UCI rows 0-10k gives 2.44 and 1.17:
  the attach rule puts a few strays of most stories in a neighbouring topic); ``ids_per_story_seen``: the same over
  every event ever published for them; ``stories_per_id``: distinct labels among a topic id's
  last published members;
- labels (every 10th run): ``labels_stale_share``, topics whose keywords or exemplar differ from
  the last ones published for them (a change no event announced); ``exemplar_is_majority_label``,
  topics whose exemplar carries the majority label of the members downstream holds in them;
  ``members_with_a_keyword``, the mean share of those members whose title has one of its keywords;
- id stability: of cluster pairs in consecutive runs that share a majority of members both ways,
  the share that kept their id (target >= 95%);
- arrival agreement: share of arrivals whose arrival-time cluster equals the one the next
  re-clustering run gives them, plus the breakdowns of earlier sessions (by placement, by fate);
- clustered-headline churn: of the headlines an earlier run had clustered (not this run's
  arrivals), the share whose cluster this run changed;
- a ceiling for arrival agreement: the share of arrivals whose next-run cluster equals the
  next-run cluster of their nearest neighbour at arrival.

Usage: .venv/bin/python bench/stream_quality.py [--data FILE] [--rows 30000] [--arrivals blocks|interleaved|file]
       [--pace backlog|stream] [--interval-s S] [--window-days D] [--settle-h H]
       [--match-threshold J] [--attach-similarity C] [--min-cluster-size N]

Settings without a flag are the service's defaults (``streamer.config.sections``; ``--window-days``
defaults to ``tracking.window_s``, so the replay measures the service's window); the flags above
override ``tracking.settle_s``, ``tracking.match_threshold``, ``clustering.attach_similarity`` and
``clustering.min_cluster_size`` for the replay only (the environment is not read).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, DATA, MirrorOnly, labelled_stream  # noqa: E402

from streamer.config.connections import KafkaSettings
from streamer.config.sections import ClusteringSettings, GraphSettings, TrackingSettings
from streamer.core.arrivals import ArrivalOutcome, EmergingRule
from streamer.core.quality import score_clustering
from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ReclusterConfig, WindowChange
from streamer.domain.events import AssignmentEvent, AssignmentReason, ClusterEvent
from streamer.domain.headline import NOISE, Headline
from streamer.observability.metrics import Health, Metrics
from streamer.service.ingest import IngestConfig, IngestPipeline
from streamer.service.recluster import Reclusterer
from streamer.service.retry import Retrier
from streamer.service.snapshots import LiveSnapshot, SnapshotHolder

BATCH = 64
DEFAULT_DATA = DATA / "uci-news-aggregator" / "newsCorpora_noURL.part01.tsv"
#: ``--arrivals blocks``: a label's rows keep their own offsets from its onset up to this.
BLOCK_SPREAD_MS = 60_000


# -- arrival orders ----------------------------------------------------------------------------
def arrival_order(
    labels: np.ndarray, times: np.ndarray, mode: str, *, median_h: float = 4.0, sigma: float = 1.2,
    cap_h: float = 72.0, seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(order, arrival times in ms): row ``order[i]`` arrives ``i``-th, at ``times_out[i]``.

    ``file``: as in the file. ``blocks``: each label's rows together at its onset (its earliest
    row), at their own offsets up to BLOCK_SPREAD_MS. ``interleaved``: the onset row at its time,
    every other row of the label at onset + min(lognormal(ln median, sigma), cap).
    """
    n = len(labels)
    if mode == "file":
        return np.arange(n), times.copy()
    onset: dict[str, int] = {}
    first: dict[str, int] = {}
    for i, (label, t) in enumerate(zip(labels.tolist(), times.tolist(), strict=True)):
        if label not in onset or t < onset[label]:
            onset[label], first[label] = int(t), i
    t_onset = np.array([onset[label] for label in labels.tolist()], dtype=np.int64)
    if mode == "blocks":
        spread = np.clip(times - t_onset, 0, BLOCK_SPREAD_MS)
        block = np.array([first[label] for label in labels.tolist()])
        order = np.lexsort((np.arange(n), spread, block, t_onset))
        return order, np.maximum.accumulate((t_onset + spread)[order])
    if mode != "interleaved":
        raise ValueError(f"unknown arrival order {mode!r}")
    rng = np.random.default_rng(seed)
    delay_h = np.minimum(np.exp(rng.normal(np.log(median_h), sigma, n)), cap_h)
    is_onset = np.array([first[label] == i for i, label in enumerate(labels.tolist())])
    out = np.where(is_onset, t_onset, t_onset + (delay_h * 3_600_000).astype(np.int64))
    order = np.argsort(out, kind="stable")
    return order, out[order]


def batches(times: np.ndarray, pace: str, wait_ms: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each micro-batch: full 64s for a backlog; by the stream's clock live."""
    n = len(times)
    start = 0
    while start < n:
        end = min(start + BATCH, n)
        if pace == "stream":
            closes = times[start] + wait_ms
            stop = start + 1
            while stop < end and times[stop] <= closes:
                stop += 1
            end = stop
        yield start, end
        start = end


# -- stand-ins for Kafka, Milvus and the thread pools --------------------------------------------
class _Record:
    """What the ingest loop reads of a Kafka record once validated (metrics only)."""

    topic = "headlines"
    timestamp_ms = 0


class InlineRunner:
    """BlockingRunner without threads: the replay is one thread, results are the same."""

    async def run(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)


class ReplayStore:
    """Milvus for the replay: every stored row is searchable; the re-clusterer's deletes remove rows."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay
        self.alive = np.zeros(len(replay.ids), dtype=bool)

    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        r = self._replay
        self.alive[[r.position[h.id] for h in headlines]] = True
        if r.mirror is not None:
            r.mirror.upsert(headlines, vectors)

    def search(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        return self.find(vectors, limit)

    def find(self, vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
        r = self._replay
        if r.mirror is not None:
            return r.mirror.search(vectors, limit)
        stored = np.flatnonzero(self.alive)
        limit = min(limit, len(stored))
        sims = vectors @ r.vectors[stored].T
        top = np.argpartition(-sims, limit - 1, axis=1)[:, :limit]
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)
        return [[r.ids[stored[j]] for j in row] for row in top], np.take_along_axis(sims, top, 1).astype(np.float32)

    def delete(self, ids: list[str]) -> None:
        r = self._replay
        self.alive[[r.position[h] for h in ids]] = False
        if r.mirror is not None:
            r.mirror.delete(ids)

    def ids_since(self, ingested_at_ms: int) -> list[str]:
        return []  # one instance: the window has every row already

    def fetch_rows(self, ids: list[str]) -> Any:
        raise AssertionError("the replay's window never misses a row")


class RecordingSink:
    """Kafka for the replay: hands every event to the replay, which keeps what downstream holds."""

    def __init__(self, replay: Replay) -> None:
        self._replay = replay

    async def send_assignments(self, events: Sequence[AssignmentEvent]) -> None:
        self._replay.on_assignments(events)

    async def send_cluster_events(self, events: Sequence[ClusterEvent]) -> None:
        self._replay.on_cluster_events(events)

    async def dead_letter(self, record: object, reason: str, error_type: str) -> None:
        raise AssertionError(f"dead letter in a replay: {reason}")

    async def send_state(self, topic: str, key: bytes, value: bytes | None) -> None:
        return None


class ObservedReclusterer(Reclusterer):
    """The service's re-clusterer; remembers what each run's compute saw and returned, for scoring."""

    observed: dict[str, Any]

    def _compute(self, run_id: int, pending: list[Any], caught_up: Any) -> WindowChange:
        registry = self.registry
        self.observed = {
            "live_before": self._holder.current,
            "previous": {cid: set(c.members) for cid, c in registry.clusters.items()},
            "arrived": [h.id for a in pending for h in a.headlines],
        }
        change = super()._compute(run_id, pending, caught_up)
        self.observed["change"] = change
        return change


class Replay:
    """One `streamer run --role all` (ingest loop + re-clusterer) fed from a file, with its events recorded."""

    def __init__(self, args: argparse.Namespace) -> None:
        ids, titles, labels, times, vectors = labelled_stream(Path(args.data), args.skip, args.rows)
        order, arrival_times = arrival_order(
            labels, times, args.arrivals, median_h=args.delay_median_h, sigma=args.delay_sigma,
            cap_h=args.delay_cap_h, seed=args.seed,
        )
        self.ids = [ids[i] for i in order]
        self.titles = [titles[i] for i in order]
        self.vectors = np.ascontiguousarray(vectors[order])
        self.times = arrival_times
        self.position = {hid: i for i, hid in enumerate(self.ids)}
        self.story = dict(zip(self.ids, labels[order].tolist(), strict=True))
        graph, clustering = GraphSettings(), ClusteringSettings(**clustering_overrides(args))
        tracking = TrackingSettings()
        self.config = ReclusterConfig(
            k=graph.k, params=clustering.hdbscan_params(), min_points=clustering.min_points,
            window_s=tracking.window_s if args.window_days is None else args.window_days * 86_400,
            max_window_size=args.max_window_size, every_n=args.every,
            every_unplaced=args.every_noise, catch_up_every_run=False,
            settle_s=tracking.settle_s if args.settle_h is None else args.settle_h * 3600,
        )
        self.rule = EmergingRule(
            attach_similarity=clustering.attach_similarity,
            emerging_similarity=tracking.emerging_similarity if args.emerging_similarity is None else args.emerging_similarity,
            emerging_min_size=tracking.emerging_min_size if args.emerging_min_size is None else args.emerging_min_size,
        )
        self.mirror = None
        if getattr(args, "mirror_exact_below", 0):
            from streamer.adapters.milvus.mirror import MirroredStore

            self.mirror = MirroredStore(MirrorOnly(), self.vectors.shape[1], exact_below=args.mirror_exact_below)
        self.loop = asyncio.new_event_loop()
        metrics, health = Metrics(), Health()
        self.retrier = Retrier(metrics, health, asyncio.Event(), 0.01, 0.01)
        self.holder = SnapshotHolder()
        match_threshold = getattr(args, "match_threshold", None) or tracking.match_threshold
        self.registry = ClusterRegistry(match_threshold=match_threshold, split_min_share=tracking.split_min_share)
        self.store = ReplayStore(self)
        self.sink = RecordingSink(self)
        self.reclusterer = ObservedReclusterer(
            store=self.store, sink=self.sink, runner=InlineRunner(), holder=self.holder,  # type: ignore[arg-type]
            registry=self.registry, metrics=metrics, config=self.config, dim=self.vectors.shape[1],
        )
        self.pipeline = IngestPipeline(
            source=None, sink=self.sink, embedder=None, store=self.store, runner=InlineRunner(),  # type: ignore[arg-type]
            holder=self.holder, metrics=metrics, health=health,
            config=IngestConfig(k=graph.k, emerging=self.rule, write_behind=False),
            listener=self.reclusterer, registry=self.registry,
        )
        self.assigner = self.pipeline._placement._assigner
        self._watch_placements()
        # between runs
        self.pending_arrivals: list[str] = []
        self._found: tuple[list[list[str]], np.ndarray] = ([], np.zeros((0, 0)))
        # per headline: what downstream holds (the last event's cluster), and every id it was shown
        self.published: dict[str, int] = {}
        self.seen_ids: dict[str, set[int]] = {}
        self.arrival_label: dict[str, int] = {}
        self.arrival_how: dict[str, str] = {}
        self.nearest_at_arrival: dict[str, str] = {}
        self.events_by_reason: dict[str, int] = {}
        self.cluster_events: dict[str, int] = {}
        self.topic_label: dict[int, tuple[tuple[str, ...], str | None]] = {}  # last published per topic
        self.merged_into: dict[int, int] = {}  # absorbed topic -> the one its `merged` event named
        self.labels_checked = self.labels_stale = 0
        self.exemplar_hits: list[float] = []
        self.keyword_hits: list[float] = []
        # tallies
        self.placed_how: dict[str, int] = {}
        self.agreements: list[float] = []
        self.republished: list[float] = []
        self.agreement_predictable: list[float] = []
        self.oracle: list[float] = []
        self.agreement_by_how: dict[str, list[float]] = {}
        self.outcomes: dict[str, int] = {}
        self.outcomes_by_how: dict[str, dict[str, int]] = {}
        self.moved_why: dict[str, int] = {}
        self.next_right: dict[str, int] = {}
        self.stability_hits = self.stability_total = 0
        self.run_scores: list[float] = []
        self.run_published_scores: list[float] = []
        self.unpublished_changes = 0
        self.settled_kept = 0
        self.run_seconds: list[float] = []
        self.arrivals_per_run: list[int] = []
        self.earlier_clustered = self.earlier_moved = 0
        self.runs_by_trigger: dict[str, int] = {}
        self.after_run: list[Callable[[dict[str, int]], None]] = []  # diagnostics: called with each run's labels
        self.published_before: dict[str, int] = {}  # what downstream held just before the current run

    def _watch_placements(self) -> None:
        """Record how the ingest loop's assigner placed each arrival (for the breakdowns)."""
        assign = self.assigner.assign

        def watched(snapshot: Any, stable_ids: Any, headlines: list[Headline], *rest: Any) -> ArrivalOutcome:
            outcome = assign(snapshot, stable_ids, headlines, *rest)
            for h, placement in zip(headlines, outcome.placements, strict=True):
                self.placed_how[placement.how] = self.placed_how.get(placement.how, 0) + 1
                self.arrival_how[h.id] = placement.how
            return outcome

        self.assigner.assign = watched  # type: ignore[method-assign]

    # -- what downstream receives ------------------------------------------------------------
    def on_assignments(self, events: Sequence[AssignmentEvent]) -> None:
        for e in events:
            self.published[e.headline_id] = e.cluster_id
            if e.cluster_id != NOISE:
                self.seen_ids.setdefault(e.headline_id, set()).add(e.cluster_id)
            reason = e.reason.value
            self.events_by_reason[reason] = self.events_by_reason.get(reason, 0) + 1
            if e.reason == AssignmentReason.ARRIVAL:
                self.arrival_label[e.headline_id] = e.cluster_id

    def on_cluster_events(self, events: Sequence[ClusterEvent]) -> None:
        for e in events:
            kind = e.type.value + (" (emerging)" if e.emerging else "")
            for absorbed in e.merged_from:
                self.merged_into[absorbed] = e.cluster_id
            self.cluster_events[kind] = self.cluster_events.get(kind, 0) + 1
            if e.type.value == "expired":
                self.topic_label.pop(e.cluster_id, None)
            else:
                self.topic_label[e.cluster_id] = (tuple(e.keywords), e.exemplar_id)

    def score_labels(self) -> None:
        """Do the topics' published keywords and exemplar describe what downstream holds in them now?

        Per live topic of the registry: its last published (keywords, exemplar) equal the registry's
        (``labels_stale`` counts those that are not: a change without an ``updated`` event); the
        exemplar's label is the majority label of the topic's members as published (in the window);
        and the share of those members whose title contains one of its keywords.
        """
        held: dict[int, list[str]] = {}
        for c in self.registry.clusters.values():
            for hid in c.members:
                cid = self.published.get(hid, NOISE)
                if cid != NOISE:
                    held.setdefault(cid, []).append(hid)
        for cid, c in self.registry.clusters.items():
            self.labels_checked += 1
            self.labels_stale += int(self.topic_label.get(cid) != (c.keywords, c.exemplar_id))
            members = held.get(cid)
            if not members or c.exemplar_id is None or c.emerging:
                continue
            stories = [self.story[h] for h in members]
            majority = max(set(stories), key=stories.count)
            self.exemplar_hits.append(float(self.story.get(c.exemplar_id) == majority))
            words = [k.lower() for k in c.keywords]
            self.keyword_hits.append(float(np.mean([any(w in self.titles[self.position[h]].lower() for w in words)
                                                    for h in members])) if words else 0.0)

    # -- ingest ----------------------------------------------------------------------------
    def search(self, start: int, end: int, heads: list[Headline]) -> tuple[list[list[str]], np.ndarray]:
        """The arrival's Milvus search, as the ingest loop makes it (its batch upserted first)."""
        return self.store.find(self.vectors[start:end], 2 * self.config.k + 1)

    def ingest(self, start: int, end: int) -> None:
        heads = [Headline(id=self.ids[i], title=self.titles[i], published_at_ms=int(self.times[i]),
                          ingested_at_ms=int(self.times[i])) for i in range(start, end)]
        replay = self
        store_search = self.store.search

        def search(vectors: np.ndarray, limit: int) -> tuple[list[list[str]], np.ndarray]:
            replay._found = replay.search(start, end, heads)
            return replay._found

        self.store.search = search  # type: ignore[method-assign]
        try:
            self.loop.run_until_complete(self.pipeline._process_valid(
                [(_Record(), h) for h in heads], self.vectors[start:end], self.retrier))  # type: ignore[arg-type]
        finally:
            self.store.search = store_search  # type: ignore[method-assign]
        for h, row in zip(heads, self._found[0], strict=True):
            others = [hid for hid in row if hid != h.id]
            if others:
                self.nearest_at_arrival[h.id] = others[0]
        self.pending_arrivals.extend(h.id for h in heads)

    def due(self) -> bool:
        """The re-clusterer's count triggers (arrivals, unplaced arrivals, first snapshot) fired."""
        return self.reclusterer._trigger.is_set()

    # -- one re-clustering run ---------------------------------------------------------------
    def recluster(self, trigger: str) -> None:
        t0 = time.perf_counter()
        self.published_before = dict(self.published)
        self.reclusterer.observed = {}
        report = self.loop.run_until_complete(self.reclusterer.run_once(self.retrier))
        seen = self.reclusterer.observed
        if report is None:  # skipped (nothing new), or too few headlines yet to cluster
            arrived = set(seen.get("arrived", ()))
            self.pending_arrivals = [h for h in self.pending_arrivals if h not in arrived]
            return
        self.run_seconds.append(time.perf_counter() - t0)
        self.runs_by_trigger[trigger] = self.runs_by_trigger.get(trigger, 0) + 1
        live, previous = seen["live_before"], seen["previous"]
        computed = seen["change"].computed
        new_live = self.holder.current
        assert new_live is not None and computed is not None
        labels_now = {hid: new_live.stable(int(computed.snapshot.labels[p])) for p, hid in enumerate(computed.ids)}
        arrived = set(seen["arrived"])
        if live is not None:
            self.score_arrivals(live, new_live, previous, labels_now)
            earlier = [h for h in labels_now if h not in arrived and self.published_before.get(h, NOISE) != NOISE]
            self.earlier_clustered += len(earlier)
            self.earlier_moved += sum(self.published_before[h] != labels_now[h] for h in earlier)
        self.pending_arrivals = [h for h in self.pending_arrivals if h not in arrived]
        self.score_stability(previous)
        truth = np.array([self.story[h] for h in computed.ids])
        self.run_scores.append(score_clustering(truth, computed.clustering.labels).bcubed_f1)
        held = np.array([self.published.get(h, NOISE) for h in computed.ids])
        self.run_published_scores.append(score_clustering(truth, held).bcubed_f1)
        settle_ms = int(self.config.settle_s * 1000)
        settled_before = int(np.max(computed.event_times_ms)) - settle_ms if settle_ms else None
        for p, h in enumerate(computed.ids):
            held = self.published.get(h, NOISE)
            if held != labels_now[h]:
                settled = held != NOISE and settled_before is not None and computed.event_times_ms[p] < settled_before
                if settled:
                    self.settled_kept += 1
                else:
                    self.unpublished_changes += 1
        if self.registry.run_id % 10 == 0:
            self.score_labels()
        for hook in self.after_run:
            hook(labels_now)

    def score_arrivals(self, live: LiveSnapshot, new_live: LiveSnapshot, previous: dict[int, set[str]],
                       labels_now: dict[str, int]) -> None:
        checked = [hid for hid in self.pending_arrivals if hid in labels_now and hid in self.arrival_label]
        self.arrivals_per_run.append(len(checked))
        existed = set(live.stable_ids.tolist())
        predictable = [h for h in checked if labels_now[h] == NOISE or labels_now[h] in existed]
        self.agreement_predictable.extend(float(self.arrival_label[h] == labels_now[h]) for h in predictable)
        self.agreements.extend(float(self.arrival_label[h] == labels_now[h]) for h in checked)
        # what downstream held for the arrival just before this run (arrival or emerging event)
        self.republished.extend(float(self.published_before[h] != labels_now[h]) for h in checked)
        self.oracle.extend(
            float(labels_now.get(self.nearest_at_arrival[h], NOISE - 1) == labels_now[h])
            for h in checked
            if h in self.nearest_at_arrival
        )
        for h in checked:
            self.agreement_by_how.setdefault(self.arrival_how.get(h, "none"), []).append(
                float(self.arrival_label[h] == labels_now[h]))
        alive = set(new_live.stable_ids.tolist())
        stories_of: dict[int, list[str]] = {}
        for hid, label in labels_now.items():
            stories_of.setdefault(label, []).append(self.story[hid])
        majority = {label: max(set(v), key=v.count) for label, v in stories_of.items() if label != NOISE}
        before = set(previous)
        for h in checked:
            a, b = self.arrival_label[h], labels_now[h]
            kind = "same" if a == b else ("noise->cluster" if a == NOISE else ("cluster->noise" if b == NOISE else "cluster->other"))
            self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
            by_how = self.outcomes_by_how.setdefault(self.arrival_how.get(h, "none"), {})
            by_how[kind] = by_how.get(kind, 0) + 1
            if kind == "cluster->other":
                # why: did the arrival's cluster survive the run, and did its new one exist before?
                fate = f"{'kept' if a in alive else 'gone'}->{'older' if b in before else 'new'}"
                by_how[fate] = by_how.get(fate, 0) + 1
                why = fate + (",emerging" if a not in existed else "")
                self.moved_why[why] = self.moved_why.get(why, 0) + 1
                self.next_right[why] = self.next_right.get(why, 0) + int(majority.get(b) == self.story[h])

    def score_stability(self, previous: dict[int, set[str]]) -> None:
        """Majority overlap both ways between consecutive runs -> the same id is expected."""
        current = {cid: set(c.members) for cid, c in self.registry.clusters.items()}
        owner = {hid: cid for cid, members in current.items() for hid in members}
        for old_id, old_members in previous.items():
            counts: dict[int, int] = {}
            for hid in old_members:
                if hid in owner:
                    counts[owner[hid]] = counts.get(owner[hid], 0) + 1
            for new_id, overlap in counts.items():
                if overlap * 2 >= len(old_members) and overlap * 2 >= len(current[new_id]):
                    self.stability_total += 1
                    self.stability_hits += int(old_id == new_id)

    # -- the figures -------------------------------------------------------------------------
    def story_id_counts(self) -> dict[str, object]:
        """ids per story (last published labels; every event) and stories per id (last published)."""
        final: dict[str, dict[int, int]] = {}
        seen: dict[str, set[int]] = {}
        members: dict[int, set[str]] = {}
        size: dict[str, int] = {}
        for hid, cid in self.published.items():
            story = self.story[hid]
            size[story] = size.get(story, 0) + 1
            if cid != NOISE:
                held = final.setdefault(story, {})
                held[cid] = held.get(cid, 0) + 1
                members.setdefault(cid, set()).add(story)
            seen.setdefault(story, set()).update(self.seen_ids.get(hid, ()))
        per_story = np.array([len(v) for v in final.values()])
        # ids holding at least 10% of the story's headlines: a few strays attached elsewhere do not count
        per_story_major = np.array([sum(n >= 0.1 * size[s] for n in v.values()) for s, v in final.items()])
        per_story_major = per_story_major[per_story_major > 0]
        per_story_seen = np.array([len(v) for v in seen.values() if v])
        per_id = np.array([len(v) for v in members.values()])
        stats = lambda a: {"mean": round(float(a.mean()), 3), "p90": float(np.percentile(a, 90))} if len(a) else {}  # noqa: E731
        return {
            "ids_per_story": stats(per_story),
            "ids_per_story_major": stats(per_story_major),
            "ids_per_story_seen": stats(per_story_seen),
            "stories_per_id": stats(per_id),
            "stories": len(set(self.story.values())),
            "stories_never_clustered": len(set(self.story.values())) - len(final),
        }

    def result(self, args: argparse.Namespace, interval_ms: int, total_s: float) -> dict[str, object]:
        final_ids = list(self.published)
        truth = np.array([self.story[h] for h in final_ids])
        live_scores = score_clustering(truth, np.array([self.published[h] for h in final_ids]))
        # What a subscriber that follows `merged` events holds: a label whose topic was merged away
        # read as the topic it went into (chains followed, loops cut).
        def follow(cid: int) -> int:
            seen = {cid}
            while cid in self.merged_into and self.merged_into[cid] not in seen:
                cid = self.merged_into[cid]
                seen.add(cid)
            return cid

        lineage_scores = score_clustering(truth, np.array([follow(self.published[h]) for h in final_ids]))
        return {
            "data": str(args.data),
            "skip": args.skip,
            "rows": len(self.ids),
            "arrivals": args.arrivals,
            "delay": ({"median_h": args.delay_median_h, "sigma": args.delay_sigma, "cap_h": args.delay_cap_h,
                       "seed": args.seed} if args.arrivals == "interleaved" else None),
            "pace": args.pace,
            "window_days": self.config.window_s / 86_400,
            "max_window_size": self.config.max_window_size,
            "settle_h": self.config.settle_s / 3600,
            "match_threshold": self.registry.match_threshold,
            "min_cluster_size": self.config.params.min_cluster_size,
            "attach_similarity": self.config.params.attach_similarity,
            "min_samples": self.config.params.min_samples,
            "selection_epsilon": self.config.params.selection_epsilon,
            "every_n": args.every,
            "every_noise": args.every_noise,
            "interval_s": interval_ms / 1000 if args.pace == "stream" else None,
            "runs": self.registry.run_id,
            "runs_by_trigger": self.runs_by_trigger,
            "arrivals_per_run_median": float(np.median(self.arrivals_per_run)) if self.arrivals_per_run else 0.0,
            "live_bcubed_f1": round(live_scores.bcubed_f1, 4),
            "live_bcubed_f1_following_merges": round(lineage_scores.bcubed_f1, 4),
            "live_bcubed_precision": round(live_scores.bcubed_precision, 4),
            "live_bcubed_recall": round(live_scores.bcubed_recall, 4),
            "live_ami": round(live_scores.ami, 4),
            "live_noise_share": round(live_scores.noise_share, 4),
            "window_bcubed_f1_mean": round(float(np.mean(self.run_scores)), 4),
            "window_published_f1_mean": round(float(np.mean(self.run_published_scores)), 4),
            "unpublished_changes": int(self.unpublished_changes),
            "settled_kept": int(self.settled_kept),
            **self.story_id_counts(),
            "labels_stale_share": round(self.labels_stale / max(self.labels_checked, 1), 4),
            "exemplar_is_majority_label": round(float(np.mean(self.exemplar_hits)), 4) if self.exemplar_hits else None,
            "members_with_a_keyword": round(float(np.mean(self.keyword_hits)), 4) if self.keyword_hits else None,
            "id_stability": round(self.stability_hits / max(self.stability_total, 1), 4),
            "stable_pairs_checked": self.stability_total,
            "arrival_agreement": round(float(np.mean(self.agreements)), 4),
            "arrivals_checked": len(self.agreements),
            "republished_share": round(float(np.mean(self.republished)), 4),
            "arrival_agreement_nearest_neighbour_ceiling": round(float(np.mean(self.oracle)), 4),
            "arrival_agreement_existing_clusters": round(float(np.mean(self.agreement_predictable)), 4),
            "arrivals_with_existing_cluster": len(self.agreement_predictable),
            "assignment_events_by_reason": self.events_by_reason,
            "cluster_events": self.cluster_events,
            "arrival_outcomes": self.outcomes,
            "arrival_outcomes_by_placement": self.outcomes_by_how,
            "cluster_to_other_by_fate": self.moved_why,
            "cluster_to_other_next_run_has_their_story": {
                k: round(self.next_right[k] / v, 3) for k, v in self.moved_why.items()},
            "arrivals_placed_by": self.placed_how,
            "agreement_by_placement": {how: round(float(np.mean(v)), 4) for how, v in sorted(self.agreement_by_how.items())},
            "emerging_rule": vars(self.rule),
            "clustered_headlines_moved_share": round(self.earlier_moved / max(self.earlier_clustered, 1), 4),
            "recluster_s_median": round(float(np.median(self.run_seconds)), 3),
            "total_s": round(total_s, 1),
        }


def drive(replay: Replay, pace: str, every_noise: int, interval_ms: int) -> None:
    """Feed the whole stream through ``replay``, re-clustering on the service's triggers.

    ``every_noise`` is read from the replay's ReclusterConfig (kept for the research scripts).
    """
    times = replay.times
    timer_due_ms = int(times[0]) + interval_ms
    for start, end in batches(times, pace, KafkaSettings().max_batch_wait_ms):
        if pace == "stream" and times[start] >= timer_due_ms:
            # The timer fired before this batch arrived; the run skips when nothing is new.
            replay.recluster("timer")
            timer_due_ms = int(times[start]) + interval_ms
        replay.ingest(start, end)
        if replay.due():
            replay.recluster("count")
            timer_due_ms = int(times[end - 1]) + interval_ms


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay's options (the research scripts share them)."""
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="labelled CSV/TSV/JSONL (default: UCI part 01)")
    parser.add_argument("--skip", type=int, default=0, help="data rows skipped first")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--arrivals", choices=("blocks", "interleaved", "file"), default="blocks")
    parser.add_argument("--delay-median-h", type=float, default=4.0, help="interleaved: median delay after a story's onset")
    parser.add_argument("--delay-sigma", type=float, default=1.2, help="interleaved: lognormal sigma of the delay")
    parser.add_argument("--delay-cap-h", type=float, default=72.0, help="interleaved: longest delay")
    parser.add_argument("--seed", type=int, default=0, help="interleaved: random seed of the delays")
    parser.add_argument("--window-days", type=float, default=None, help="default: tracking.window_s (1 day)")
    parser.add_argument("--max-window-size", type=int, default=None,
                        help="cap on headlines in the window; default: tracking.max_window_size")
    parser.add_argument("--pace", choices=("backlog", "stream"), default="backlog",
                        help="backlog: count triggers only; stream: the stream's own clock drives batches and the timer")
    parser.add_argument("--every", type=int, default=None, help="default: tracking.recluster_every_n")
    parser.add_argument("--every-noise", type=int, default=None,
                        help="re-cluster after this many unplaced arrivals (0 = off; default: tracking.recluster_noise_n)")
    parser.add_argument("--interval-s", type=float, default=None, help="--pace stream; default: tracking.recluster_interval_s")
    parser.add_argument("--emerging-similarity", type=float, default=None, help="default: tracking.emerging_similarity")
    parser.add_argument("--emerging-min-size", type=int, default=None, help="default: tracking.emerging_min_size (0 = off)")
    parser.add_argument("--settle-h", type=float, default=None, help="default: tracking.settle_s (0 = publish every change)")
    parser.add_argument("--match-threshold", type=float, default=None, help="default: tracking.match_threshold")
    parser.add_argument("--attach-similarity", type=float, default=None, help="default: clustering.attach_similarity")
    parser.add_argument("--min-cluster-size", type=int, default=None, help="default: clustering.min_cluster_size")
    parser.add_argument("--min-samples", type=int, default=None, help="default: clustering.min_samples")
    parser.add_argument("--selection-epsilon", type=float, default=None, help="default: clustering.selection_epsilon")
    parser.add_argument("--mirror-exact-below", type=int, default=0,
                        help="search through streamer's MirroredStore, indexed from this many rows (0 = exact numpy search)")


def clustering_overrides(args: argparse.Namespace) -> dict[str, object]:
    """The clustering settings given on the command line (the rest keep their defaults)."""
    given = {"attach_similarity": getattr(args, "attach_similarity", None),
             "min_cluster_size": getattr(args, "min_cluster_size", None),
             "min_samples": getattr(args, "min_samples", None),
             "selection_epsilon": getattr(args, "selection_epsilon", None)}
    return {key: value for key, value in given.items() if value is not None}


def resolve_defaults(args: argparse.Namespace) -> int:
    """Fill the service's defaults in; returns the timer interval in ms."""
    tracking = TrackingSettings()
    args.window_days = tracking.window_s / 86_400 if args.window_days is None else args.window_days
    args.every = tracking.recluster_every_n if args.every is None else args.every
    if getattr(args, "max_window_size", None) is None:
        args.max_window_size = tracking.max_window_size
    args.every_noise = tracking.recluster_noise_n if args.every_noise is None else args.every_noise
    return int(1000 * (tracking.recluster_interval_s if args.interval_s is None else args.interval_s))


def main() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.add_argument("--out", type=Path, default=None, help="default: .cache/bench/stream_quality_<arrivals>_<pace>.json")
    args = parser.parse_args()
    interval_ms = resolve_defaults(args)
    replay = Replay(args)
    started = time.perf_counter()
    drive(replay, args.pace, args.every_noise, interval_ms)
    result = replay.result(args, interval_ms, time.perf_counter() - started)
    print(json.dumps(result))
    out = args.out or CACHE / f"stream_quality_{args.arrivals}_{args.pace}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
