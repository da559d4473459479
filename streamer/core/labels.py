"""Human-readable cluster labels: c-TF-IDF keywords and an exemplar headline.

c-TF-IDF treats each cluster's concatenated titles as one document: a term's
weight is its frequency in the cluster (normalised by the cluster's word count)
times log(1 + A / f_t), with A the average word count per cluster and f_t the
term's frequency over all clusters (the class-based TF-IDF of BERTopic).
The exemplar is the member most similar to the cluster's mean direction.
Pure numpy/scikit-learn; no I/O.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from streamer.core.clustering import members_by_cluster

__all__ = ["ctfidf_keywords", "exemplars"]

# Aggregated headlines carry the outlet after a dash ("... - Los Angeles Times"); the outlet
# name is not what the story is about, so the suffix is left out of the keyword text.
_OUTLET_SUFFIX = re.compile(r"\s+[-|–—]\s+[^-|–—]{2,60}$")


def _keyword_text(title: str) -> str:
    return _OUTLET_SUFFIX.sub("", title)


def ctfidf_keywords(titles: list[str], labels: np.ndarray, n_clusters: int, top_n: int = 8) -> list[list[str]]:
    """Top ``top_n`` c-TF-IDF terms of each cluster 0..n_clusters-1 (noise is ignored).

    Parameters
    ----------
    titles:
        One title per point.
    labels:
        (n,) int cluster index per point, -1 for noise.
    """
    if len(titles) != len(labels):
        raise ValueError(f"{len(titles)} titles but {len(labels)} labels")
    if n_clusters == 0:
        return []
    docs = [" ".join(_keyword_text(titles[i]) for i in members.tolist()) for members in members_by_cluster(labels, n_clusters)]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b", lowercase=True)
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError:  # every document only stop words / empty
        return [[] for _ in range(n_clusters)]
    counts = sp.csr_matrix(counts, dtype=np.float64)
    words_per_cluster = np.asarray(counts.sum(axis=1)).ravel()
    tf = sp.diags(1.0 / np.maximum(words_per_cluster, 1.0)) @ counts
    term_freq = np.asarray(counts.sum(axis=0)).ravel()
    avg_words = words_per_cluster.mean()
    idf = np.log1p(avg_words / np.maximum(term_freq, 1.0))
    scores = (tf @ sp.diags(idf)).tocsr()
    vocab = vectorizer.get_feature_names_out()
    out: list[list[str]] = []
    for c in range(n_clusters):
        lo, hi = scores.indptr[c], scores.indptr[c + 1]
        if lo == hi:
            out.append([])
            continue
        # Ties broken alphabetically so keywords are deterministic.
        order = sorted(zip(-scores.data[lo:hi], vocab[scores.indices[lo:hi]], strict=True))[:top_n]
        out.append([str(term) for _, term in order])
    return out


def exemplars(vectors: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Index of each cluster's most central member: highest cosine to the cluster's mean vector.

    Returns (n_clusters,) int64.
    """
    if len(vectors) != len(labels):
        raise ValueError(f"{len(vectors)} vectors but {len(labels)} labels")
    out = np.full(n_clusters, -1, dtype=np.int64)
    for c, members in enumerate(members_by_cluster(labels, n_clusters)):
        if members.size == 0:
            continue
        centroid = vectors[members].mean(axis=0)
        out[c] = members[int(np.argmax(vectors[members] @ centroid))]
    return out
