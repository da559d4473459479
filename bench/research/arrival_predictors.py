"""Diagnostic: how other arrival predictors would agree with the next re-clustering run.

Runs bench/stream_quality.py's replay unchanged (streamer's own placement decides every
published label) and, for each arrival, also records what a few alternative predictors would
have published from the same neighbour search, then scores all of them against the next run:

- ``published``: streamer's label for the arrival after its batch (emerging moves included);
- ``nearest``: the published label of its nearest neighbour;
- ``vote_k{k}_s{s}``: the similarity-weighted vote of the published labels of its top-k
  neighbours with cosine >= s (noise votes too); ``votec_...``: noise does not vote;
- ``oracle_...``: the same votes over the labels the *next run* gives those neighbours, i.e. a
  predictor that knew the future clustering of everything around the arrival (and
  ``oracle_nearest``, the nearest neighbour's next-run label): how far any rule that reads
  the arrival's neighbourhood could get.

It also reports how far any rule that publishes an id *existing at arrival* could get:
``reachable_k{k}`` is the share of arrivals whose next-run cluster is noise or the published
cluster of one of their top-k neighbours (a perfect chooser among those labels scores this),
and ``next_run_id_unborn`` the share whose next-run cluster had no id yet when they arrived
(only a topic started at arrival and kept by the run could give them their id).

Command (~40 s once the UCI vectors are cached; docs/benchmarks.md quotes it):
    .venv/bin/python bench/research/arrival_predictors.py [--pace backlog|stream] [--rows 30000] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import stream_quality as sq  # noqa: E402
from common import add_data_argument, use_data  # noqa: E402

from streamer.config.sections import TrackingSettings
from streamer.domain.headline import NOISE, Headline

KS = (5, 10, 30)
SIMILARITIES = (0.4, 0.5, 0.6)


class ScoredReplay(sq.Replay):
    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.candidates: dict[str, dict[str, int]] = {}
        self.tally: dict[str, list[bool]] = {}
        self._found: tuple[list[list[str]], np.ndarray] = ([], np.zeros((0, 0)))
        self.neighbours: dict[str, list[tuple[str, float]]] = {}
        self.reachable: dict[str, dict[str, set[int]]] = {}
        self.ids_at_arrival: dict[str, int] = {}

    def search(self, start: int, end: int, heads: list[Headline]) -> tuple[list[list[str]], np.ndarray]:
        self._found = super().search(start, end, heads)
        return self._found

    def ingest(self, start: int, end: int) -> None:
        super().ingest(start, end)
        found, sims = self._found
        for i, hid in enumerate(self.ids[start:end]):
            row = [(h, s) for h, s in zip(found[i], sims[i].tolist(), strict=True) if h != hid]
            self.neighbours[hid] = row[: max(KS)]
            label = lambda h: self.published.get(h, NOISE)  # noqa: E731
            c = {"published": self.published[hid], "nearest": label(row[0][0]) if row else NOISE}
            c.update(votes_of(row, label, ""))
            self.candidates[hid] = c
            self.reachable[hid] = {f"reachable_k{k}": {NOISE, *(label(h) for h, _ in row[:k])} for k in KS}
            self.ids_at_arrival[hid] = self.registry.next_id

    def score_arrivals(self, live, new_live, previous, labels_now) -> None:  # type: ignore[no-untyped-def]
        super().score_arrivals(live, new_live, previous, labels_now)
        future = lambda h: labels_now.get(h, NOISE)  # noqa: E731
        for hid in self.pending_arrivals:
            if hid in labels_now and hid in self.candidates:
                row = self.neighbours.get(hid, [])
                oracle = {"oracle_nearest": future(row[0][0]) if row else NOISE, **votes_of(row, future, "oracle_")}
                for name, label in {**self.candidates[hid], **oracle}.items():
                    self.tally.setdefault(name, []).append(label == labels_now[hid])
                for name, labels in self.reachable[hid].items():
                    self.tally.setdefault(name, []).append(labels_now[hid] in labels)
                unborn = labels_now[hid] != NOISE and labels_now[hid] > self.ids_at_arrival[hid]
                self.tally.setdefault("next_run_id_unborn", []).append(unborn)


def votes_of(row: list[tuple[str, float]], label, prefix: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Similarity-weighted votes of the neighbours' labels, for every k and similarity floor."""
    out: dict[str, int] = {}
    for k in KS:
        for s_min in SIMILARITIES:
            votes: dict[int, float] = {}
            for h, s in row[:k]:
                if s >= s_min:
                    votes[label(h)] = votes.get(label(h), 0.0) + s
            out[f"{prefix}vote_k{k}_s{s_min}"] = max(votes, key=votes.__getitem__) if votes else NOISE
            clustered = {lab: w for lab, w in votes.items() if lab != NOISE}
            out[f"{prefix}votec_k{k}_s{s_min}"] = max(clustered, key=clustered.__getitem__) if clustered else NOISE
    return out


def default_replay_args(rows: int, pace: str) -> argparse.Namespace:
    """bench/stream_quality.py's arguments with the service's own triggers and rules."""
    parser = argparse.ArgumentParser()
    sq.add_arguments(parser)
    args = parser.parse_args(["--rows", str(rows), "--pace", pace])
    sq.resolve_defaults(args)
    return args


def interval_ms() -> int:
    return int(1000 * TrackingSettings().recluster_interval_s)


def run_replay(replay_class: type[ScoredReplay]) -> ScoredReplay:
    """Parse --rows/--pace/--data, replay the stream with the service's defaults through ``replay_class``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--pace", choices=("backlog", "stream"), default="backlog")
    add_data_argument(parser)
    args = parser.parse_args()
    use_data(args.data)
    ns = default_replay_args(args.rows, args.pace)
    replay = replay_class(ns)
    sq.drive(replay, args.pace, ns.every_noise, interval_ms())
    return replay


def main() -> None:
    replay = run_replay(ScoredReplay)
    print(f"arrival label (the bench's agreement): {np.mean(replay.agreements):.4f} of {len(replay.agreements)}")
    for name, hits in sorted(replay.tally.items(), key=lambda kv: -np.mean(kv[1])):
        print(f"{name:18s} {np.mean(hits):.4f}")


if __name__ == "__main__":
    main()
