"""Replay the UCI stream in time order through streamer's windowed re-clusterer; score it.

The re-clusterer's own compute path runs (Reclusterer._compute: window upkeep, HDBSCAN,
snapshot), ids are tracked by ClusterRegistry and arrivals are assigned by ArrivalAssigner,
exactly as in `streamer run`. Kafka and Milvus are left out: they do not change a label.
Each arrival's "Milvus search" is an exact inner-product search over the headlines seen so
far (what a FLAT Milvus index returns), or streamer's own search mirror (--mirror-exact-below).

Two paces (``--pace``):
- ``backlog`` (default): the stream is read as fast as it can be, in 64-headline batches, so the
  count triggers decide every run (``--every`` arrivals, ``--every-noise`` unplaced ones): the
  service working through a backlog, ~1,000 arrivals between runs;
- ``stream``: the feed's own clock (its TIMESTAMP column) stands in for the wall clock, as if
  streamer consumed it live: a micro-batch closes after ``kafka.max_batch_wait_ms`` of stream
  time or at 64 headlines, and the ``tracking.recluster_interval_s`` timer fires as well as the
  count triggers, whichever comes first, as in ``streamer run``.

Reported (docs/benchmarks.md):
- live quality: B-cubed F1 / AMI of the cluster each headline was last published with, vs STORY;
- arrival agreement: share of arrivals whose arrival-time cluster equals the one the next
  re-clustering run gives them (target >= 90%), over all arrivals and over the arrivals whose
  next-run cluster already existed when they arrived (the only ones a predictor can get right:
  UCI headlines come in story bursts, and many arrivals between runs start new stories);
- republished share: arrivals whose last published cluster (arrival, or moved into an emerging
  topic) differs from the next run's, i.e. the re-assignment events that run publishes for them;
- id stability: of cluster pairs in consecutive runs that share a majority of members both ways,
  the share that kept their id (target >= 95%);
- clustered-headline churn: of the headlines an earlier run had clustered (not this run's
  arrivals), the share whose cluster this run changed: how stable the re-clustering itself is;
- a ceiling for arrival agreement: the share of arrivals whose next-run cluster equals the
  next-run cluster of their nearest neighbour at arrival (a predictor that knew the next run's
  labels of the neighbours, and copied the nearest one's, would score this).

Usage: .venv/bin/python bench/stream_quality.py [--rows 30000] [--window-days 3] [--every 1000] [--pace stream] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, MirrorOnly, add_data_argument, uci_rows, uci_window, use_data  # noqa: E402

from streamer.config.connections import KafkaSettings
from streamer.config.sections import ClusteringSettings, GraphSettings, TrackingSettings
from streamer.core.arrivals import ArrivalAssigner, EmergingRule
from streamer.core.quality import score_clustering
from streamer.core.tracking import ClusterRegistry
from streamer.core.window import ReclusterConfig
from streamer.domain.headline import NOISE, Headline
from streamer.domain.ports import Arrivals
from streamer.service.recluster import Reclusterer
from streamer.service.snapshots import LiveSnapshot, SnapshotHolder

BATCH = 64


def batches(times: np.ndarray, pace: str, wait_ms: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each micro-batch: full 64s for a backlog; by the feed's clock live."""
    n = len(times)
    start = 0
    while start < n:
        end = min(start + BATCH, n)
        if pace == "stream":
            closes = times[start] + wait_ms
            end = start + 1 + int(np.searchsorted(times[start + 1 : end], closes, side="right"))
        yield start, end
        start = end


class Replay:
    """The ingest loop and the re-clusterer of one `streamer run --role all`, without the I/O."""

    def __init__(self, args: argparse.Namespace) -> None:
        rows = uci_rows(0, args.rows)
        self.ids, self.titles, stories, self.vectors = uci_window(0, args.rows)
        self.times = np.array([int(r["TIMESTAMP"]) for r in rows], dtype=np.int64)
        self.story = dict(zip(self.ids, stories, strict=True))
        graph, clustering = GraphSettings(), ClusteringSettings()
        tracking = TrackingSettings()
        self.config = ReclusterConfig(
            k=graph.k, params=clustering.hdbscan_params(), min_points=clustering.min_points,
            window_s=args.window_days * 86_400, max_window_size=100_000, every_n=args.every,
        )
        self.rule = EmergingRule(
            attach_similarity=clustering.attach_similarity,
            emerging_similarity=tracking.emerging_similarity if args.emerging_similarity is None else args.emerging_similarity,
            emerging_min_size=tracking.emerging_min_size if args.emerging_min_size is None else args.emerging_min_size,
        )
        self.holder = SnapshotHolder()
        self.registry = ClusterRegistry()
        self.assigner = ArrivalAssigner(self.rule, self.registry)
        self.reclusterer = Reclusterer(store=None, sink=None, runner=None, holder=self.holder, registry=self.registry,  # type: ignore[arg-type]
                                       metrics=None, config=self.config, dim=self.vectors.shape[1])  # type: ignore[arg-type]
        self.mirror = None
        if args.mirror_exact_below:
            from streamer.adapters.milvus.mirror import MirroredStore

            self.mirror = MirroredStore(MirrorOnly(), self.vectors.shape[1], exact_below=args.mirror_exact_below)
        # between runs
        self.pending: list[Arrivals] = []
        self.pending_arrivals: list[str] = []
        self.since_run = self.noise_since_run = 0
        # per headline
        self.published: dict[str, int] = {}
        self.arrival_label: dict[str, int] = {}
        self.arrival_how: dict[str, str] = {}
        self.nearest_at_arrival: dict[str, str] = {}
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
        self.run_seconds: list[float] = []
        self.arrivals_per_run: list[int] = []
        self.earlier_clustered = self.earlier_moved = 0
        self.runs_by_trigger: dict[str, int] = {}

    # -- ingest ----------------------------------------------------------------------------
    def search(self, start: int, end: int, heads: list[Headline]) -> tuple[list[list[str]], np.ndarray]:
        """The arrival's Milvus search: everything stored so far, itself included (upserted first)."""
        limit = min(2 * self.config.k + 1, end)
        if self.mirror is not None:
            self.mirror.upsert(heads, self.vectors[start:end])
            return self.mirror.search(self.vectors[start:end], limit)
        sims = self.vectors[start:end] @ self.vectors[:end].T
        top = np.argpartition(-sims, limit - 1, axis=1)[:, :limit]
        order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, 1)
        return [[self.ids[j] for j in row] for row in top], np.take_along_axis(sims, top, 1).astype(np.float32)

    def ingest(self, start: int, end: int) -> None:
        heads = [Headline(id=self.ids[i], title=self.titles[i], published_at_ms=int(self.times[i]),
                          ingested_at_ms=int(self.times[i])) for i in range(start, end)]
        found, found_sims = self.search(start, end, heads)
        for h, row in zip(heads, found, strict=True):
            others = [hid for hid in row if hid != h.id]
            if others:
                self.nearest_at_arrival[h.id] = others[0]
        live = self.holder.current
        if live is not None:
            outcome = self.assigner.assign(live.snapshot, live.stable_ids, heads, found, found_sims)
            for h, placement in zip(heads, outcome.placements, strict=True):
                self.published[h.id] = self.arrival_label[h.id] = placement.cluster_id
                self.placed_how[placement.how] = self.placed_how.get(placement.how, 0) + 1
                self.arrival_how[h.id] = placement.how
            for moved, cluster_id in outcome.moved:
                self.published[moved.id] = cluster_id
            self.noise_since_run += sum(1 for p in outcome.placements if p.cluster_id == NOISE)
        else:
            for h in heads:
                self.published[h.id] = self.arrival_label[h.id] = NOISE
        self.pending_arrivals.extend(h.id for h in heads)
        self.pending.append(Arrivals(heads, self.vectors[start:end], found, found_sims))
        self.since_run += len(heads)

    def count_trigger(self, every_noise: int, end: int) -> str | None:
        if self.since_run >= self.config.every_n:
            return "arrivals"
        if every_noise and self.noise_since_run >= every_noise:
            return "unplaced"
        if self.holder.current is None and end >= self.config.min_points:
            return "first"
        return None

    # -- one re-clustering run ---------------------------------------------------------------
    def recluster(self, trigger: str) -> None:
        live = self.holder.current
        t0 = time.perf_counter()
        empty_catch_up = ([], np.zeros((0, self.vectors.shape[1]), np.float32), [])
        computed = self.reclusterer._compute(self.registry.run_id + 1, self.pending, empty_catch_up).computed
        self.pending, self.since_run, self.noise_since_run = [], 0, 0
        if computed is None:
            return
        self.runs_by_trigger[trigger] = self.runs_by_trigger.get(trigger, 0) + 1
        previous = {cid: set(c.members) for cid, c in self.registry.clusters.items()}
        tracking = self.registry.update(computed.ids, computed.clustering.labels, computed.summaries)
        self.run_seconds.append(time.perf_counter() - t0)
        new_live = LiveSnapshot(computed.snapshot, tracking.stable_ids)
        self.holder.swap(new_live)
        labels_now = {hid: new_live.stable(int(computed.snapshot.labels[p])) for p, hid in enumerate(computed.ids)}
        if live is not None:
            self.score_arrivals(live, new_live, previous, labels_now)
            arrived = set(self.pending_arrivals)
            earlier = [h for h in labels_now if h not in arrived and self.published.get(h, NOISE) != NOISE]
            self.earlier_clustered += len(earlier)
            self.earlier_moved += sum(self.published[h] != labels_now[h] for h in earlier)
        self.pending_arrivals = []
        self.published.update(labels_now)
        self.score_stability(previous)
        truth = np.array([self.story[h] for h in computed.ids])
        self.run_scores.append(score_clustering(truth, computed.clustering.labels).bcubed_f1)

    def score_arrivals(self, live: LiveSnapshot, new_live: LiveSnapshot, previous: dict[int, set[str]],
                       labels_now: dict[str, int]) -> None:
        checked = [hid for hid in self.pending_arrivals if hid in labels_now]
        self.arrivals_per_run.append(len(checked))
        existed = set(live.stable_ids.tolist())
        predictable = [h for h in checked if labels_now[h] == NOISE or labels_now[h] in existed]
        self.agreement_predictable.extend(float(self.arrival_label[h] == labels_now[h]) for h in predictable)
        self.agreements.extend(float(self.arrival_label[h] == labels_now[h]) for h in checked)
        self.republished.extend(float(self.published[h] != labels_now[h]) for h in checked)
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
        for old_id, old_members in previous.items():
            for new_id, new_members in current.items():
                overlap = len(old_members & new_members)
                if overlap and overlap * 2 >= len(old_members) and overlap * 2 >= len(new_members):
                    self.stability_total += 1
                    self.stability_hits += int(old_id == new_id)

    def result(self, args: argparse.Namespace, interval_ms: int, total_s: float) -> dict[str, object]:
        final_ids = list(self.published)
        live_scores = score_clustering(np.array([self.story[h] for h in final_ids]),
                                       np.array([self.published[h] for h in final_ids]))
        return {
            "rows": args.rows,
            "pace": args.pace,
            "window_days": args.window_days,
            "every_n": args.every,
            "every_noise": args.every_noise,
            "interval_s": interval_ms / 1000 if args.pace == "stream" else None,
            "runs": self.registry.run_id,
            "runs_by_trigger": self.runs_by_trigger,
            "arrivals_per_run_median": float(np.median(self.arrivals_per_run)),
            "live_bcubed_f1": round(live_scores.bcubed_f1, 4),
            "live_ami": round(live_scores.ami, 4),
            "live_noise_share": round(live_scores.noise_share, 4),
            "window_bcubed_f1_mean": round(float(np.mean(self.run_scores)), 4),
            "arrival_agreement": round(float(np.mean(self.agreements)), 4),
            "arrivals_checked": len(self.agreements),
            "republished_share": round(float(np.mean(self.republished)), 4),
            "arrival_agreement_nearest_neighbour_ceiling": round(float(np.mean(self.oracle)), 4),
            "arrival_agreement_existing_clusters": round(float(np.mean(self.agreement_predictable)), 4),
            "arrivals_with_existing_cluster": len(self.agreement_predictable),
            "arrival_outcomes": self.outcomes,
            "arrival_outcomes_by_placement": self.outcomes_by_how,
            "cluster_to_other_by_fate": self.moved_why,
            "cluster_to_other_next_run_has_their_story": {
                k: round(self.next_right[k] / v, 3) for k, v in self.moved_why.items()},
            "arrivals_placed_by": self.placed_how,
            "agreement_by_placement": {how: round(float(np.mean(v)), 4) for how, v in sorted(self.agreement_by_how.items())},
            "emerging_rule": vars(self.rule),
            "clustered_headlines_moved_share": round(self.earlier_moved / max(self.earlier_clustered, 1), 4),
            "id_stability": round(self.stability_hits / max(self.stability_total, 1), 4),
            "stable_pairs_checked": self.stability_total,
            "recluster_s_median": round(float(np.median(self.run_seconds)), 3),
            "total_s": round(total_s, 1),
        }


def drive(replay: Replay, pace: str, every_noise: int, interval_ms: int) -> None:
    """Feed the whole stream through ``replay``, re-clustering on the service's triggers."""
    times = replay.times
    timer_due_ms = int(times[0]) + interval_ms
    for start, end in batches(times, pace, KafkaSettings().max_batch_wait_ms):
        if pace == "stream" and times[start] >= timer_due_ms:
            # The timer fired before this batch arrived; like the service, a run with nothing
            # new to take in is skipped (here: not run at all), and the timer restarts.
            if replay.pending:
                replay.recluster("timer")
            timer_due_ms = int(times[start]) + interval_ms
        replay.ingest(start, end)
        trigger = replay.count_trigger(every_noise, end)
        if trigger:
            replay.recluster(trigger)
            timer_due_ms = int(times[end - 1]) + interval_ms


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--window-days", type=float, default=3.0)
    parser.add_argument("--pace", choices=("backlog", "stream"), default="backlog",
                        help="backlog: count triggers only; stream: the feed's own clock drives batches and the timer")
    parser.add_argument("--every", type=int, default=None, help="default: tracking.recluster_every_n")
    parser.add_argument("--every-noise", type=int, default=None,
                        help="re-cluster after this many noise arrivals (0 = off; default: tracking.recluster_noise_n)")
    parser.add_argument("--interval-s", type=float, default=None, help="--pace stream; default: tracking.recluster_interval_s")
    parser.add_argument("--emerging-similarity", type=float, default=None, help="default: tracking.emerging_similarity")
    parser.add_argument("--emerging-min-size", type=int, default=None, help="default: tracking.emerging_min_size (0 = off)")
    parser.add_argument("--mirror-exact-below", type=int, default=0,
                        help="search through streamer's MirroredStore, indexed from this many rows (0 = exact numpy search)")
    parser.add_argument("--out", type=Path, default=None, help="default: .cache/bench/stream_quality[_stream].json")
    args = parser.parse_args()
    use_data(args.data)
    tracking = TrackingSettings()
    args.every = tracking.recluster_every_n if args.every is None else args.every
    args.every_noise = tracking.recluster_noise_n if args.every_noise is None else args.every_noise
    interval_ms = int(1000 * (tracking.recluster_interval_s if args.interval_s is None else args.interval_s))
    replay = Replay(args)
    started = time.perf_counter()
    drive(replay, args.pace, args.every_noise, interval_ms)
    result = replay.result(args, interval_ms, time.perf_counter() - started)
    print(json.dumps(result))
    out = args.out or CACHE / ("stream_quality.json" if args.pace == "backlog" else "stream_quality_stream.json")
    out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
