"""Diagnostic: does any HDBSCAN / graph setting make the next run agree more with arrivals?

Replays bench/stream_quality.py (``--pace backlog``, 30k rows) once per setting, each changed
alone from streamer's defaults, two replays at a time, and prints live B-cubed F1, arrival
agreement with the next run and the live noise share. The defaults were chosen for quality
(bench/research/quality_sweep.py); this checks that no nearby setting trades a little quality
for agreement.

Command (~3 min once the UCI vectors are cached; docs/benchmarks.md quotes it):
    .venv/bin/python bench/research/agreement_sweep.py [--rows 30000] [--data DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_argument  # noqa: E402

GRID: list[dict[str, object]] = [
    {},
    {"min_cluster_size": 4}, {"min_cluster_size": 6}, {"min_cluster_size": 8}, {"min_cluster_size": 15},
    {"min_samples": 2}, {"min_samples": 5},
    {"selection_epsilon": 0.15}, {"selection_epsilon": 0.35},
    {"attach_similarity": 0.0}, {"attach_similarity": 0.4}, {"attach_similarity": 0.6},
    {"selection_method": "leaf"},
    {"min_cluster_size": 5, "min_samples": 2},
    {"graph.k": 30},
]


def replay_one(setting: dict[str, object], rows: int, data: Path) -> dict[str, object]:
    """One replay with ``setting`` applied to ClusteringSettings (``graph.*``: GraphSettings)."""
    import time

    import stream_quality as sq
    from arrival_predictors import default_replay_args, interval_ms
    from common import use_data

    use_data(data)

    from streamer.config.sections import ClusteringSettings, GraphSettings

    graph = {k.removeprefix("graph."): v for k, v in setting.items() if k.startswith("graph.")}
    clustering = {k: v for k, v in setting.items() if not k.startswith("graph.")}
    sq.ClusteringSettings = functools.partial(ClusteringSettings, **clustering)  # type: ignore[misc]
    sq.GraphSettings = functools.partial(GraphSettings, **graph)  # type: ignore[misc]
    args = default_replay_args(rows, "backlog")
    replay = sq.Replay(args)
    started = time.perf_counter()
    sq.drive(replay, args.pace, args.every_noise, interval_ms())
    return replay.result(args, interval_ms(), time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # a child replay: a JSON setting
    add_data_argument(parser)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(replay_one(json.loads(args.one), args.rows, args.data)))
        return

    def child(setting: dict[str, object]) -> dict[str, object]:
        # A process per replay: each patches the settings classes for itself.
        out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--data", str(args.data), "--one", json.dumps(setting)],
                             check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(child, GRID))
    print("| setting (one change from the defaults) | live B³ F1 | arrival agreement | live noise |")
    print("|---|---|---|---|")
    for setting, r in zip(GRID, results, strict=True):
        name = ", ".join(f"{k}={v}" for k, v in setting.items()) or "defaults"
        print(f"| {name} | {r['live_bcubed_f1']:.4f} | {r['arrival_agreement']:.4f} | {r['live_noise_share']:.4f} |")


if __name__ == "__main__":
    main()
