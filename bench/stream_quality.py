"""Replay the UCI stream in time order through streamer's windowed re-clusterer; score it.

The re-clusterer's own compute path runs (Reclusterer._compute: window upkeep, HDBSCAN,
snapshot), ids are tracked by ClusterRegistry and arrivals are assigned by assign_arrivals,
exactly as in `streamer run`. Kafka and Milvus are left out: they do not change a label.
Each arrival's "Milvus search" is an exact inner-product search over the headlines seen so
far (what a FLAT Milvus index returns).

Reported (docs/benchmarks.md):
- live quality: B-cubed F1 / AMI of the cluster each headline was last published with, vs STORY;
- arrival agreement: share of arrivals whose arrival-time cluster equals the one the next
  re-clustering run gives them (target >= 90%), over all arrivals and over the arrivals whose
  next-run cluster already existed when they arrived (the only ones a predictor can get right:
  UCI headlines come in story bursts, and most arrivals between runs start new stories);
- id stability: of cluster pairs in consecutive runs that share a majority of members both ways,
  the share that kept their id (target >= 95%);
- a ceiling for arrival agreement: the share of arrivals whose next-run cluster equals the
  next-run cluster of their nearest neighbour at arrival (a predictor that knew the next run's
  labels of the neighbours, and copied the nearest one's, would score this).

Usage: .venv/bin/python bench/stream_quality.py [--rows 30000] [--window-days 3] [--every 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, MirrorOnly, uci_rows, uci_window  # noqa: E402

from streamer.batch import params_from_settings  # noqa: E402
from streamer.config import ClusteringSettings, GraphSettings, TrackingSettings  # noqa: E402
from streamer.pipeline import Arrivals, LiveSnapshot, SnapshotHolder  # noqa: E402
from streamer.quality import score_clustering  # noqa: E402
from streamer.recluster import ReclusterConfig, Reclusterer  # noqa: E402
from streamer.schema import NOISE, Headline  # noqa: E402
from streamer.arrivals import ArrivalAssigner, EmergingRule  # noqa: E402
from streamer.tracking import ClusterRegistry  # noqa: E402

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--window-days", type=float, default=3.0)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--every-noise", type=int, default=200, help="also re-cluster after this many noise arrivals (0 = off)")
    parser.add_argument("--emerging-similarity", type=float, default=None, help="default: tracking.emerging_similarity")
    parser.add_argument("--emerging-min-size", type=int, default=None, help="default: tracking.emerging_min_size (0 = off)")
    parser.add_argument("--mirror-exact-below", type=int, default=0,
                        help="search through streamer's MirroredStore, indexed from this many rows (0 = exact numpy search)")
    args = parser.parse_args()
    rows = uci_rows(0, args.rows)
    ids, titles, stories, vectors = uci_window(0, args.rows)
    times = np.array([int(r["TIMESTAMP"]) for r in rows], dtype=np.int64)
    graph, clustering = GraphSettings(), ClusteringSettings()
    config = ReclusterConfig(
        k=graph.k, params=params_from_settings(clustering), min_points=clustering.min_points,
        window_s=args.window_days * 86_400, max_window_size=100_000, every_n=args.every,
    )
    holder = SnapshotHolder()
    registry = ClusterRegistry()
    tracking_defaults = TrackingSettings()
    rule = EmergingRule(
        attach_similarity=clustering.attach_similarity,
        emerging_similarity=tracking_defaults.emerging_similarity if args.emerging_similarity is None else args.emerging_similarity,
        emerging_min_size=tracking_defaults.emerging_min_size if args.emerging_min_size is None else args.emerging_min_size,
    )
    assigner = ArrivalAssigner(rule, registry)
    placed_how: dict[str, int] = {}
    nearest_at_arrival: dict[str, str] = {}
    oracle: list[float] = []
    arrival_how: dict[str, str] = {}
    agreement_by_how: dict[str, list[float]] = {}
    reclusterer = Reclusterer(store=None, sink=None, runner=None, holder=holder, registry=registry,  # type: ignore[arg-type]
                              metrics=None, config=config, dim=vectors.shape[1])  # type: ignore[arg-type]
    story = dict(zip(ids, stories, strict=True))
    published: dict[str, int] = {}
    arrival_label: dict[str, int] = {}
    pending_arrivals: list[str] = []
    agreements: list[float] = []
    disagreement: dict[str, int] = {}
    moved_why: dict[str, int] = {}
    next_right: dict[str, int] = {}
    agreement_predictable: list[float] = []
    noise_since_run = 0
    stability_hits = stability_total = 0
    run_scores = []
    run_seconds = []
    pending: list[Arrivals] = []
    since_run = 0
    empty_catch_up = ([], np.zeros((0, vectors.shape[1]), np.float32), [])
    mirror = None
    if args.mirror_exact_below:
        from streamer.mirror import MirroredStore

        mirror = MirroredStore(MirrorOnly(), vectors.shape[1], exact_below=args.mirror_exact_below)
    started = time.perf_counter()
    for start in range(0, args.rows, BATCH):
        end = min(start + BATCH, args.rows)
        heads = [Headline(id=ids[i], title=titles[i], published_at_ms=int(times[i]), ingested_at_ms=int(times[i])) for i in range(start, end)]
        # The arrival's Milvus search: everything stored so far, itself included (upserted first).
        limit = min(2 * config.k + 1, end)
        if mirror is not None:
            mirror.upsert(heads, vectors[start:end])
            found, found_sims = mirror.search(vectors[start:end], limit)
        else:
            sims = vectors[start:end] @ vectors[:end].T
            top = np.argpartition(-sims, limit - 1, axis=1)[:, :limit]
            order = np.take_along_axis(sims, top, 1).argsort(axis=1)[:, ::-1]
            top = np.take_along_axis(top, order, 1)
            found = [[ids[j] for j in row] for row in top]
            found_sims = np.take_along_axis(sims, top, 1).astype(np.float32)
        for h, row in zip(heads, found, strict=True):
            others = [hid for hid in row if hid != h.id]
            if others:
                nearest_at_arrival[h.id] = others[0]
        live = holder.current
        if live is not None:
            outcome = assigner.assign(live.snapshot, live.stable_ids, heads, found, found_sims)
            for h, placement in zip(heads, outcome.placements, strict=True):
                published[h.id] = arrival_label[h.id] = placement.cluster_id
                placed_how[placement.how] = placed_how.get(placement.how, 0) + 1
                arrival_how[h.id] = placement.how
            for moved, cluster_id in outcome.moved:
                published[moved.id] = cluster_id
            noise_since_run += sum(1 for p in outcome.placements if p.cluster_id == NOISE)
        else:
            for h in heads:
                published[h.id] = arrival_label[h.id] = NOISE
        pending_arrivals.extend(h.id for h in heads)
        pending.append(Arrivals(heads, vectors[start:end], found, found_sims))
        since_run += len(heads)
        noise_due = args.every_noise and noise_since_run >= args.every_noise
        if since_run >= args.every or noise_due or (live is None and end >= config.min_points):
            noise_since_run = 0
            t0 = time.perf_counter()
            computed = reclusterer._compute(registry.run_id + 1, pending, empty_catch_up)
            pending, since_run = [], 0
            if computed is None:
                continue
            previous = {cid: set(c.members) for cid, c in registry.clusters.items()}
            tracking = registry.update(computed.export.ids, computed.clustering.labels, computed.summaries)
            run_seconds.append(time.perf_counter() - t0)
            new_live = LiveSnapshot(computed.snapshot, tracking.stable_ids)
            holder.swap(new_live)
            labels_now = {hid: new_live.stable(int(computed.snapshot.labels[p])) for p, hid in enumerate(computed.export.ids)}
            if live is not None:
                checked = [hid for hid in pending_arrivals if hid in labels_now]
                existed = set(live.stable_ids.tolist())
                predictable = [h for h in checked if labels_now[h] == NOISE or labels_now[h] in existed]
                agreement_predictable.extend(float(arrival_label[h] == labels_now[h]) for h in predictable)
                agreements.extend(float(arrival_label[h] == labels_now[h]) for h in checked)
                oracle.extend(
                    float(labels_now.get(nearest_at_arrival[h], NOISE - 1) == labels_now[h])
                    for h in checked
                    if h in nearest_at_arrival
                )
                for h in checked:
                    agreement_by_how.setdefault(arrival_how.get(h, "none"), []).append(float(arrival_label[h] == labels_now[h]))
                alive = set(new_live.stable_ids.tolist())
                stories_of: dict[int, list[str]] = {}
                for hid, label in labels_now.items():
                    stories_of.setdefault(label, []).append(story[hid])
                majority = {label: max(set(v), key=v.count) for label, v in stories_of.items() if label != NOISE}
                before = set(previous)
                for h in checked:
                    a, b = arrival_label[h], labels_now[h]
                    kind = "same" if a == b else ("noise->cluster" if a == NOISE else ("cluster->noise" if b == NOISE else "cluster->other"))
                    disagreement[kind] = disagreement.get(kind, 0) + 1
                    if kind == "cluster->other":
                        # why: did the arrival's cluster survive the run, and did its new one exist before?
                        why = f"{'kept' if a in alive else 'gone'}->{'older' if b in before else 'new'}"
                        why += ",emerging" if a not in existed else ""
                        moved_why[why] = moved_why.get(why, 0) + 1
                        next_right[why] = next_right.get(why, 0) + int(majority.get(b) == story[h])
            pending_arrivals = []
            published.update(labels_now)
            # id stability: majority overlap both ways between consecutive runs -> same id expected
            current = {cid: set(c.members) for cid, c in registry.clusters.items()}
            for old_id, old_members in previous.items():
                for new_id, new_members in current.items():
                    overlap = len(old_members & new_members)
                    if overlap * 2 >= len(old_members) and overlap * 2 >= len(new_members) and overlap:
                        stability_total += 1
                        stability_hits += int(old_id == new_id)
            truth = np.array([story[h] for h in computed.export.ids])
            run_scores.append(score_clustering(truth, computed.clustering.labels).bcubed_f1)
    final_ids = list(published)
    live_scores = score_clustering(np.array([story[h] for h in final_ids]), np.array([published[h] for h in final_ids]))
    result = {
        "rows": args.rows,
        "window_days": args.window_days,
        "every_n": args.every,
        "every_noise": args.every_noise,
        "runs": registry.run_id,
        "live_bcubed_f1": round(live_scores.bcubed_f1, 4),
        "live_ami": round(live_scores.ami, 4),
        "live_noise_share": round(live_scores.noise_share, 4),
        "window_bcubed_f1_mean": round(float(np.mean(run_scores)), 4),
        "arrival_agreement": round(float(np.mean(agreements)), 4),
        "arrivals_checked": len(agreements),
        "arrival_agreement_nearest_neighbour_ceiling": round(float(np.mean(oracle)), 4),
        "arrival_agreement_existing_clusters": round(float(np.mean(agreement_predictable)), 4),
        "arrivals_with_existing_cluster": len(agreement_predictable),
        "arrival_outcomes": disagreement,
        "cluster_to_other_by_fate": moved_why,
        "cluster_to_other_next_run_has_their_story": {k: round(next_right[k] / v, 3) for k, v in moved_why.items()},
        "arrivals_placed_by": placed_how,
        "agreement_by_placement": {how: round(float(np.mean(v)), 4) for how, v in sorted(agreement_by_how.items())},
        "emerging_rule": vars(rule),
        "id_stability": round(stability_hits / max(stability_total, 1), 4),
        "stable_pairs_checked": stability_total,
        "recluster_s_median": round(float(np.median(run_seconds)), 3),
        "total_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result))
    (CACHE / "stream_quality.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
