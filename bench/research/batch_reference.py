"""Reference for the live figures: streamer's batch clustering of the same rows, scored the same way.

The replay's mean window F1 averages runs over 3-day windows (fewer stories each, so an easier
B-cubed) while the live figure scores every replayed headline at once. A batch clustering of all
the replayed rows (``streamer cluster``'s path: exact kNN graph, HDBSCAN, attach rule) is scored
over the same population as the live figure.

Usage: .venv/bin/python bench/research/batch_reference.py --data FILE [--rows 30000]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import labelled_stream  # noqa: E402

from streamer.batch.cluster import cluster_vectors
from streamer.config.sections import ClusteringSettings, GraphSettings
from streamer.core.quality import score_clustering


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=30_000)
    args = parser.parse_args()
    ids, _, labels, _, vectors = labelled_stream(args.data, 0, args.rows)
    _, result, _ = cluster_vectors(ids, vectors, GraphSettings(), ClusteringSettings())
    scores = score_clustering(labels, result.labels)
    per_story: dict[str, Counter[int]] = {}
    for story, label in zip(labels.tolist(), result.labels.tolist(), strict=True):
        per_story.setdefault(story, Counter())[label] += 1
    ids_all = np.array([sum(1 for c in v if c >= 0) for v in per_story.values()])
    major = np.array([sum(1 for c, n in v.items() if c >= 0 and n >= 0.1 * sum(v.values())) for v in per_story.values()])
    print(json.dumps({
        "data": str(args.data), "rows": len(ids), "batch_bcubed_f1": round(scores.bcubed_f1, 4),
        "batch_ami": round(scores.ami, 4), "batch_noise_share": round(scores.noise_share, 4),
        "ids_per_story": round(float(ids_all[ids_all > 0].mean()), 3),
        "ids_per_story_major": round(float(major[major > 0].mean()), 3),
    }))


if __name__ == "__main__":
    main()
