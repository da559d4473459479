"""Cluster quality of streamer's batch path on 10k-headline UCI windows, against STORY ids.

Uses streamer's own code (exact kNN graph, HDBSCAN, attach rule) with its defaults, and the
tutorial's parameters on the same sparse graph for comparison. Noise counts as singletons.
Usage:
    .venv/bin/python bench/quality.py [--windows 0 50000 100000 150000 200000] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, add_data_argument, uci_window, use_data  # noqa: E402

from streamer.batch.cluster import cluster_vectors
from streamer.config.sections import ClusteringSettings, GraphSettings
from streamer.core.quality import score_clustering

CONFIGS = {
    "streamer defaults": (GraphSettings(), ClusteringSettings()),
    "defaults without attach": (GraphSettings(), ClusteringSettings(attach_similarity=0.0)),
    "tutorial parameters (k=50, mcs=3, ms=3, max 3000), sparse": (
        GraphSettings(k=50),
        ClusteringSettings(
            min_cluster_size=3, min_samples=3, selection_method="eom", selection_epsilon=0.0,
            max_cluster_size=3000, attach_similarity=0.0,
        ),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--windows", type=int, nargs="+", default=[0, 50_000, 100_000, 150_000, 200_000])
    parser.add_argument("--size", type=int, default=10_000)
    args = parser.parse_args()
    use_data(args.data)
    rows = []
    for start in args.windows:
        ids, _, stories, vectors = uci_window(start, args.size)
        for name, (graph, clustering) in CONFIGS.items():
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            _, result, _ = cluster_vectors(ids, vectors, graph, clustering, timings=timings)
            scores = score_clustering(stories, result.labels).as_dict()
            row = {"window_start": start, "config": name, **scores, "seconds": round(time.perf_counter() - t0, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "quality.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
