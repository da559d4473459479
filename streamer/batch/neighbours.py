"""Pick and run a kNN strategy for a set of headlines (application layer over :mod:`streamer.core.graph`).

- ``exact``: faiss inner-product search over the vectors (read back from Milvus or just embedded);
- ``ivf``: a faiss inverted-file index over the same vectors, for large windows;
- ``hnsw``: faiss HNSW over the same vectors;
- ``milvus``: Milvus search for every vector (works against any deployment, slow in bulk);
- ``auto``: exact below ``approx_threshold`` points, ivf above.
"""

from __future__ import annotations

import numpy as np

from streamer.config.sections import GraphSettings
from streamer.core.graph import (
    NeighbourTable,
    knn_exact,
    knn_hnsw,
    knn_ivf,
    neighbours_from_search,
)
from streamer.domain.ports import VectorStore

__all__ = ["compute_neighbours", "resolve_method"]

# Milvus hits outside the clustered set are dropped, so ask for more than k.
_MILVUS_OVERFETCH = 2


def resolve_method(settings: GraphSettings, n: int) -> str:
    if settings.method != "auto":
        return settings.method
    return "ivf" if n >= settings.approx_threshold else "exact"


def compute_neighbours(
    settings: GraphSettings, ids: list[str], vectors: np.ndarray, store: VectorStore | None = None
) -> tuple[NeighbourTable, str]:
    """Top-k neighbours of every row among the rows themselves; returns (table, method used)."""
    method = resolve_method(settings, len(ids))
    if method == "exact":
        return knn_exact(vectors, settings.k, block_size=settings.block_size), method
    if method == "ivf":
        return knn_ivf(vectors, settings.k), method
    if method == "hnsw":
        return knn_hnsw(vectors, settings.k), method
    if store is None:
        raise ValueError("graph.method 'milvus' needs a vector store")
    found, sims = store.search(vectors, limit=min(16_384, settings.k * _MILVUS_OVERFETCH + 1))
    return neighbours_from_search(ids, found, sims, settings.k), method
