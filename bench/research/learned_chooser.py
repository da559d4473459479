"""Diagnostic: would a learned chooser among the neighbours' labels agree more with the next run?

The service could learn its arrival rule from its own re-clustering runs: every run labels the
arrivals since the last one, and their neighbour searches were already done at arrival. This
replays bench/stream_quality.py unchanged (streamer's own placement decides every published
label) and records, for each arrival, one candidate per distinct label among noise and the
published labels of its top-30 neighbours, with features of that candidate:

- summed cosine similarity of the neighbours carrying it in the top 5 / 10 / 30, how many of
  the top 10 carry it, the most similar one and its rank, and how far that is below the
  arrival's nearest neighbour;
- whether it is noise, streamer's published label or its arrival-time label, and the
  cluster's size in the registry.

A gradient-boosted classifier (scikit-learn, already a dependency of hdbscan) is trained on the
first half of the arrivals, in stream order, to say which candidate the next run gives; on the
second half the top-scored candidate is compared with streamer's placement. The chooser can
only publish an id that exists at arrival, so ``reachable`` (next-run label among the
candidates) bounds it.

Command (~40 s once the UCI vectors are cached; docs/benchmarks.md quotes it):
    .venv/bin/python bench/research/learned_chooser.py [--pace backlog|stream] [--rows 30000] [--data DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from arrival_predictors import ScoredReplay, run_replay  # noqa: E402

from streamer.domain.headline import NOISE

TOP = 30
Candidates = list[tuple[int, list[float]]]


class FeatureReplay(ScoredReplay):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.features: dict[str, Candidates] = {}
        self.next_run: dict[str, int] = {}

    def ingest(self, start: int, end: int) -> None:
        super().ingest(start, end)  # fills self.neighbours (arrival's own id removed, best first)
        for hid in self.ids[start:end]:
            self.features[hid] = self.candidates_of(hid)  # insertion order: stream order

    def candidates_of(self, hid: str) -> Candidates:
        row = self.neighbours.get(hid, [])[:TOP]
        nearest = row[0][1] if row else 0.0
        # per label: top-5 sum, top-10 sum, top-30 sum, top-10 count, best similarity, best rank
        stats: dict[int, list[float]] = {NOISE: [0.0, 0.0, 0.0, 0.0, -1.0, float(TOP)]}
        for rank, (h, sim) in enumerate(row):
            f = stats.setdefault(self.published.get(h, NOISE), [0.0, 0.0, 0.0, 0.0, -1.0, float(TOP)])
            f[0] += sim if rank < 5 else 0.0
            f[1] += sim if rank < 10 else 0.0
            f[3] += 1.0 if rank < 10 else 0.0
            f[2] += sim
            f[4] = max(f[4], sim)
            f[5] = min(f[5], float(rank))
        out: Candidates = []
        for label, f in stats.items():
            cluster = self.registry.clusters.get(label)
            size = len(cluster.members) if cluster is not None else 0
            out.append((label, [*f, nearest, nearest - f[4], float(label == NOISE),
                                float(label == self.published[hid]), float(label == self.arrival_label[hid]),
                                math.log1p(size)]))
        return out

    def score_arrivals(self, live, new_live, previous, labels_now) -> None:  # type: ignore[no-untyped-def]
        super().score_arrivals(live, new_live, previous, labels_now)
        for hid in self.pending_arrivals:
            if hid in labels_now:
                self.next_run[hid] = labels_now[hid]


def design(replay: FeatureReplay, arrivals: list[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Rows are candidates, an arrival's together; ``starts[i]`` is arrival i's first row."""
    rows, hits, starts = [], [], []
    for hid in arrivals:
        starts.append(len(rows))
        for label, features in replay.features[hid]:
            rows.append(features)
            hits.append(label == replay.next_run[hid])
    return np.array(rows), np.array(hits), starts


def main() -> None:
    replay = run_replay(FeatureReplay)
    assert isinstance(replay, FeatureReplay)
    scored = [h for h in replay.features if h in replay.next_run]
    half = len(scored) // 2
    train, test = scored[:half], scored[half:]
    x_train, y_train, _ = design(replay, train)
    x_test, y_test, starts = design(replay, test)
    model = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x_train, y_train)
    score = model.predict_proba(x_test)[:, 1]
    chosen, reachable = [], []
    for begin, end in zip(starts, [*starts[1:], len(y_test)], strict=True):
        chosen.append(bool(y_test[begin + np.argmax(score[begin:end])]))
        reachable.append(bool(y_test[begin:end].any()))
    streamer = [replay.arrival_label[h] == replay.next_run[h] for h in test]
    print(f"test arrivals (second half): {len(test)}")
    print(f"streamer's placement   {np.mean(streamer):.4f}")
    print(f"learned chooser        {np.mean(chosen):.4f}")
    print(f"reachable (any choice) {np.mean(reachable):.4f}")


if __name__ == "__main__":
    main()
