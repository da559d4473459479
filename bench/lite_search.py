"""Milvus Lite search time with and without flushing its memtable (docs/benchmarks.md, streaming latency).

Fills a Lite collection with ``--rows`` random unit vectors through ``MilvusStore``, then times
upsert-5 + search-5 (limit 31, as the ingest loop does) ``--loops`` times, once with
``milvus.lite_flush_rows=0`` (Lite's own 128 MB budget) and once with the default.

Usage: .venv/bin/python bench/lite_search.py [--rows 20000] [--loops 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

from streamer.adapters.milvus.store import MilvusStore
from streamer.config.connections import MilvusSettings
from streamer.domain.headline import Headline


def measure(rows: int, loops: int, flush_rows: int) -> dict[str, float]:
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        v = rng.normal(size=(n, 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    with tempfile.TemporaryDirectory() as tmp:
        settings = MilvusSettings(uri=f"{tmp}/bench.db", lite_flush_rows=flush_rows)
        with MilvusStore(settings, 384) as store:
            for start in range(0, rows, 500):
                store.upsert([Headline(id=f"h{start + i}", title="t", published_at_ms=1) for i in range(500)], unit(500))
            searches = []
            for loop in range(loops):
                vectors = unit(5)
                store.upsert([Headline(id=f"n{loop}-{i}", title="t", published_at_ms=1) for i in range(5)], vectors)
                started = time.perf_counter()
                store.search(vectors, 31)
                searches.append(time.perf_counter() - started)
    ms = np.array(searches) * 1000
    return {"lite_flush_rows": flush_rows, "search_p50_ms": round(float(np.median(ms)), 1),
            "search_p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--loops", type=int, default=200)
    args = parser.parse_args()
    for flush_rows in (0, MilvusSettings().lite_flush_rows):
        print(json.dumps({"rows": args.rows, **measure(args.rows, args.loops, flush_rows)}), flush=True)


if __name__ == "__main__":
    main()
