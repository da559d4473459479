"""The Milvus tutorial's method vs streamer's, on the same vectors (UCI headlines, bundled model).

Tutorial ("HDBSCAN clustering with Milvus"): Milvus search in batches of 10 with limit 50,
an N x N matrix filled with inf and the returned distances (asymmetric), then
``hdbscan.HDBSCAN(min_samples=3, min_cluster_size=3, max_cluster_size=3000, metric="precomputed")``.
As written it crashes hdbscan 0.8.44, so a second variant symmetrises the dense matrix and
replaces inf by a finite 2.0 (the least change that runs) to get a completed dense timing.

streamer: read the vectors back from Milvus, exact kNN (faiss), sparse symmetric graph, HDBSCAN
with streamer's defaults.

Each method runs in its own process (peak RSS from wait4). Usage:
    .venv/bin/python bench/tutorial_vs_streamer.py [--sizes 2000 10000 20000] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, add_data_argument, run_measured, uci_window, use_data  # noqa: E402

_LOAD = """
import json, time, numpy as np, sys
from pathlib import Path
sys.path.insert(0, "bench")
from common import uci_window
from streamer.config.connections import MilvusSettings
from streamer.domain.headline import Headline
from streamer.adapters.milvus.store import MilvusStore
ids, titles, stories, vectors = uci_window(0, {n})
db = "{db}"
store = MilvusStore(MilvusSettings(uri=db, collection="bench_{n}"), vectors.shape[1]).open()
"""

TUTORIAL = _LOAD + """
import hdbscan
t0 = time.perf_counter()
n = len(ids)
position = {{h: i for i, h in enumerate(ids)}}
dist = np.full((n, n), np.inf, dtype=np.float64)
for start in range(0, n, 10):  # the tutorial's batch of 10, limit 50
    found, sims = store.search(vectors[start:start + 10], 50)
    for row, (hits, row_sims) in enumerate(zip(found, sims)):
        for hid, s in zip(hits, row_sims):
            dist[start + row, position[hid]] = 1.0 - s
t_search = time.perf_counter() - t0
print(json.dumps({{"search_s": round(t_search, 2)}}), flush=True)
{fix}
t1 = time.perf_counter()
labels = hdbscan.HDBSCAN(min_samples=3, min_cluster_size=3, max_cluster_size=3000, metric="precomputed").fit_predict(dist)
print(json.dumps({{"search_s": round(t_search, 2), "hdbscan_s": round(time.perf_counter() - t1, 2),
                  "total_s": round(time.perf_counter() - t0, 2), "clusters": int(labels.max() + 1)}}))
"""

STREAMER = _LOAD + """
from streamer.batch.cluster import cluster_vectors
from streamer.config.sections import ClusteringSettings, GraphSettings
t0 = time.perf_counter()
back_ids, back_vectors, _ = store.fetch_all(fields=())
t_read = time.perf_counter() - t0
timings = {{}}
_, clustering, method = cluster_vectors(back_ids, back_vectors, GraphSettings(), ClusteringSettings(), timings=timings)
print(json.dumps({{"read_back_s": round(t_read, 2), "graph_s": round(timings["graph_s"], 2),
                  "hdbscan_s": round(timings["hdbscan_s"], 2), "total_s": round(time.perf_counter() - t0, 2),
                  "clusters": clustering.n_clusters, "graph_method": method}}))
"""

PREPARE = _LOAD + """
from streamer.domain.headline import Headline
if store.count() != len(ids):
    heads = [Headline(id=i, title=t, ingested_at_ms=0) for i, t in zip(ids, titles)]
    for s in range(0, len(ids), 2000):
        store.upsert(heads[s:s + 2000], vectors[s:s + 2000])
print(json.dumps({{"rows": store.count()}}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000, 20000])
    parser.add_argument("--skip-tutorial-above", type=int, default=20000)
    parser.add_argument("--as-written-max", type=int, default=2000, help="largest N for the crashing original")
    parser.add_argument("--memory-cap-gib", type=float, default=14.0)
    args = parser.parse_args()
    use_data(args.data)
    results = []
    for n in args.sizes:
        db = str(CACHE / f"milvus_bench_{n}.db")
        uci_window(0, n)  # make sure the embeddings are cached before timing anything
        print(f"N={n}: loading Milvus", run_measured(PREPARE.format(n=n, db=db)), flush=True)
        row = {"n": n, "streamer": run_measured(STREAMER.format(n=n, db=db))}
        print(f"N={n} streamer", row["streamer"], flush=True)
        if n <= args.skip_tutorial_above:
            if n <= args.as_written_max:
                row["tutorial_as_written"] = run_measured(TUTORIAL.format(n=n, db=db, fix=""), memory_cap_gib=args.memory_cap_gib)
                print(f"N={n} tutorial as written", row["tutorial_as_written"], flush=True)
            fix = "dist = np.minimum(dist, dist.T); dist[np.isinf(dist)] = 2.0; np.fill_diagonal(dist, 0.0)"
            row["tutorial_symmetrised"] = run_measured(TUTORIAL.format(n=n, db=db, fix=fix), memory_cap_gib=args.memory_cap_gib)
            print(f"N={n} tutorial symmetrised", row["tutorial_symmetrised"], flush=True)
        results.append(row)
    out = CACHE / "tutorial_vs_streamer.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
