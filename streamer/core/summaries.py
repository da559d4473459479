"""What a cluster looks like to people: size, c-TF-IDF keywords, exemplar, persistence."""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from streamer.core.clustering import Clustering
from streamer.core.labels import ctfidf_keywords, exemplars


def summarise_clusters(
    ids: list[str], titles: list[str], vectors: np.ndarray, clustering: Clustering, top_keywords: int
) -> list[ClusterSummary]:
    """Size, keywords, exemplar and persistence of every cluster."""
    k = clustering.n_clusters
    keywords = ctfidf_keywords(titles, clustering.labels, k, top_keywords)
    central = exemplars(vectors, clustering.labels, k)
    sizes = np.bincount(clustering.labels[clustering.labels >= 0], minlength=k)
    persistence = clustering.persistence if len(clustering.persistence) == k else np.zeros(k)
    return [
        ClusterSummary(
            cluster_id=c,
            size=int(sizes[c]),
            keywords=keywords[c],
            exemplar_id=ids[central[c]],
            exemplar_title=titles[central[c]],
            persistence=round(float(persistence[c]), 6),
        )
        for c in range(k)
    ]


class ClusterSummary(BaseModel):
    """One cluster as the report and the lifecycle events describe it."""

    cluster_id: int
    size: int
    keywords: list[str]
    exemplar_id: str
    exemplar_title: str
    persistence: float


