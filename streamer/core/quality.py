"""Cluster quality against ground truth (e.g. UCI STORY ids): B-cubed, ARI, AMI.

B-cubed precision of an item is the share of its predicted cluster that shares its
true class; recall the share of its true class inside its predicted cluster; both
averaged over items (Bagga & Baldwin 1998; Amigó et al. 2009). Noise (-1) counts
as singletons: every noise point is its own predicted cluster.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from streamer.domain.headline import NOISE

__all__ = ["QualityScores", "bcubed", "score_clustering", "noise_as_singletons"]


@dataclass(frozen=True)
class QualityScores:
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f1: float
    ari: float
    ami: float
    noise_share: float
    n_clusters: int
    n_items: int

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def noise_as_singletons(labels: np.ndarray) -> np.ndarray:
    """Relabel each noise point as its own cluster (ids above the largest real label)."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    noise = labels == NOISE
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def bcubed(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float, float]:
    """B-cubed (precision, recall, F1); ``predicted`` must already have noise made singletons.

    >>> bcubed(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    (1.0, 1.0, 1.0)
    """
    truth = np.asarray(truth)
    predicted = np.asarray(predicted)
    if truth.shape != predicted.shape:
        raise ValueError(f"truth {truth.shape} and predicted {predicted.shape} differ")
    if truth.size == 0:
        raise ValueError("no items to score")
    _, t = np.unique(truth, return_inverse=True)
    _, p = np.unique(predicted, return_inverse=True)
    # Contingency counts n(p, t) per item, via a sparse pair count.
    pair = p.astype(np.int64) * (t.max() + 1) + t
    _, pair_inv, pair_counts = np.unique(pair, return_inverse=True, return_counts=True)
    overlap = pair_counts[pair_inv]
    precision = float(np.mean(overlap / np.bincount(p)[p]))
    recall = float(np.mean(overlap / np.bincount(t)[t]))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def score_clustering(truth: np.ndarray, labels: np.ndarray) -> QualityScores:
    """All scores for ``labels`` (with -1 noise) against ``truth``."""
    labels = np.asarray(labels)
    singles = noise_as_singletons(labels)
    p, r, f = bcubed(truth, singles)
    return QualityScores(
        bcubed_precision=p,
        bcubed_recall=r,
        bcubed_f1=f,
        ari=float(adjusted_rand_score(truth, singles)),
        ami=float(adjusted_mutual_info_score(truth, singles)),
        noise_share=float(np.mean(labels == NOISE)),
        n_clusters=int(len(set(labels.tolist()) - {NOISE})),
        n_items=int(labels.size),
    )
