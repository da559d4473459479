"""Small deterministic data for unit tests."""

from __future__ import annotations

import numpy as np

from streamer.core.clustering import HdbscanParams


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def blobs(n_clusters: int = 4, per_cluster: int = 40, dim: int = 24, spread: float = 0.15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well separated unit-vector blobs and their true labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    x = np.vstack([centres[c] + spread * rng.normal(size=(per_cluster, dim)) for c in range(n_clusters)])
    return unit_rows(x), np.repeat(np.arange(n_clusters), per_cluster)


#: HDBSCAN parameters for the tests' small hand-made windows (tens of points): smaller
#: clusters and leaf selection, where the service's defaults are tuned for thousands.
SMALL_DATA_PARAMS = HdbscanParams(
    min_cluster_size=5, min_samples=2, selection_method="leaf", selection_epsilon=0.0, attach_similarity=0.0
)
