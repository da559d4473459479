"""Scale: batch graph+HDBSCAN at 100k headlines, and re-clustering runs on maintained windows.

Cases (each in its own process; peak RSS from wait4):
- batch100k: 100k real UCI headlines (bundled model): kNN (auto: IVF at this size, and exact),
  graph, HDBSCAN — the `streamer cluster` path after embedding. Target <= 30 s, <= 3 GB.
- recluster100k: a 100k-headline window with its graph maintained; 1,000 new arrivals (their
  own lists from an exact search, as Milvus FLAT returns) are linked, then one re-clustering run
  (Reclusterer._compute: link, repair, HDBSCAN, snapshot, keywords, exemplars) + id tracking.
  Target <= 30 s.
- recluster1m: the same on 1,000,000 synthetic unit vectors (64-d, 20k clusters); the initial
  graph is built with IVF before timing. Target <= 10 min, <= 16 GB.

Usage: .venv/bin/python bench/scale.py [--cases batch100k recluster100k recluster1m] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, add_data_argument, run_measured, use_data  # noqa: E402

BATCH = """
import json, time, sys, numpy as np
sys.path.insert(0, "bench")
from common import uci_window
from streamer.batch.cluster import cluster_vectors
from streamer.config.sections import ClusteringSettings, GraphSettings
ids, titles, stories, vectors = uci_window(0, 100_000)
out = {}
for method in ("auto", "exact"):
    timings = {}
    t0 = time.perf_counter()
    _, clustering, used = cluster_vectors(ids, vectors, GraphSettings(method=method), ClusteringSettings(), timings=timings)
    out[method] = {"method": used, "graph_s": round(timings["graph_s"], 1), "hdbscan_s": round(timings["hdbscan_s"], 1),
                   "total_s": round(time.perf_counter() - t0, 1), "clusters": clustering.n_clusters}
print(json.dumps(out))
"""

RECLUSTER = """
import json, time, sys, numpy as np
sys.path.insert(0, "bench")
from streamer.config.sections import ClusteringSettings
from streamer.domain.ports import Arrivals
from streamer.service.snapshots import SnapshotHolder
from streamer.core.window import ReclusterConfig
from streamer.service.recluster import Reclusterer
from streamer.domain.headline import Headline
from streamer.core.tracking import ClusterRegistry
N, NEW = {n}, 1000
{load}
ids = [str(i) for i in range(len(vectors))]
config = ReclusterConfig(params=ClusteringSettings().hdbscan_params(), window_s=1e12, max_window_size=10**7)
r = Reclusterer(store=None, sink=None, runner=None, holder=SnapshotHolder(), registry=ClusterRegistry(), metrics=None, config=config, dim=vectors.shape[1])
t0 = time.perf_counter()
r.window.window.add(ids[:N], titles[:N], list(range(N)), vectors[:N])
r.window.window.rebuild(method="ivf" if N >= 50_000 else "exact")
build_s = time.perf_counter() - t0
empty = ([], np.zeros((0, vectors.shape[1]), np.float32), [])
first = r._compute(1, [], empty).computed
r.registry.update(first.ids, first.clustering.labels, first.summaries)
# new arrivals with their own exact top-(2k+1) lists, as a FLAT Milvus search returns them
# (faiss's exact search: a dense 1,000 x 1M product plus argsort would itself take 12 GB)
import faiss
new = vectors[N:N + NEW]
flat = faiss.IndexFlatIP(vectors.shape[1])
flat.add(vectors[:N + NEW])
top_sims, top = flat.search(new, 31)
del flat
arrivals = Arrivals([Headline(id=ids[N + i], title=titles[N + i], published_at_ms=N + i) for i in range(NEW)], new,
                    [[ids[j] for j in row] for row in top], top_sims.astype(np.float32))
t1 = time.perf_counter()
computed = r._compute(2, [arrivals], empty).computed
compute_s = time.perf_counter() - t1
tracking = r.registry.update(computed.ids, computed.clustering.labels, computed.summaries)
run_s = time.perf_counter() - t1
print(json.dumps({{"window": len(computed.ids), "initial_graph_s": round(build_s, 1), "first_run_s": None,
                  "run_s": round(run_s, 1), "compute_s": round(compute_s, 1), "clusters": computed.clustering.n_clusters,
                  "events": len(tracking.events)}}))
"""

LOAD_REAL = """
from common import uci_window, uci_rows
_, _, _, vectors = uci_window(0, 100_000)
vectors = np.concatenate([vectors, vectors[:NEW] * 0.999 + 0.001 * np.random.default_rng(0).normal(size=(NEW, vectors.shape[1])).astype(np.float32)])
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
titles = [r["TITLE"] for r in uci_rows(0, 100_000)] + [f"new {i}" for i in range(NEW)]
N = 100_000
"""

LOAD_SYNTHETIC = """
rng = np.random.default_rng(0)
total = N + NEW
centres = rng.normal(size=(20_000, 64)).astype(np.float32)
vectors = centres[rng.integers(0, 20_000, total)] + 0.35 * rng.normal(size=(total, 64)).astype(np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
words = np.array(["alpha", "beta", "gamma", "delta", "market", "storm", "vote", "match", "court", "rates"])
titles = [" ".join(words[rng.integers(0, 10, 4)]) for _ in range(total)]
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--cases", nargs="+", default=["batch100k", "recluster100k", "recluster1m"])
    args = parser.parse_args()
    use_data(args.data)
    results = {}
    for case in args.cases:
        if case == "batch100k":
            code = BATCH
        elif case == "recluster100k":
            code = RECLUSTER.format(n=100_000, load=LOAD_REAL)
        else:
            code = RECLUSTER.format(n=1_000_000, load=LOAD_SYNTHETIC)
        results[case] = run_measured(code, timeout_s=3600)
        print(case, json.dumps(results[case]), flush=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "scale.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
