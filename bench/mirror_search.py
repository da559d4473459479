"""The search mirror on real headline vectors: exact vs inverted-file search, time and recall.

For each collection size, the UCI vectors (bundled model) go into a MirroredStore; 64-headline
query batches (the service's micro-batch, taken from the following rows, as arrivals would be)
ask for 31 neighbours (2k + 1). Reported: ms per batch exact and indexed, recall@31 of the
indexed search against the exact one, and the slowest 64-row upsert while the collection grows
to that size (what ingest waits for), with the index (re)trained inside the upsert and in the
background.

Usage: .venv/bin/python bench/mirror_search.py [--sizes 20000 50000 100000] [--nprobe 32] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import CACHE, MirrorOnly, add_data_argument, uci_window, use_data  # noqa: E402

from streamer.adapters.milvus.mirror import MirroredStore
from streamer.domain.headline import Headline


def fill(ids: list[str], vectors: np.ndarray, exact_below: int, nprobe: int, *, background: bool = True,
         batch: int = 4096) -> tuple[MirroredStore, float]:
    """The mirror after upserting every row ``batch`` at a time (trainings finished); the slowest upsert in ms."""
    mirror = MirroredStore(MirrorOnly(), vectors.shape[1], exact_below=exact_below, nprobe=nprobe,
                           train_in_background=background)
    slowest = 0.0
    for start in range(0, len(ids), batch):
        began = time.perf_counter()
        mirror.upsert([Headline(id=i, title=i) for i in ids[start : start + batch]], vectors[start : start + batch])
        slowest = max(slowest, time.perf_counter() - began)
    mirror.wait_for_index()
    return mirror, 1000 * slowest


def timed_search(mirror: MirroredStore, queries: np.ndarray) -> tuple[list[list[str]], float]:
    found: list[list[str]] = []
    started = time.perf_counter()
    for start in range(0, len(queries), 64):
        found += mirror.search(queries[start : start + 64], 31)[0]
    return found, 1000 * (time.perf_counter() - started) / (len(queries) / 64)


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 50_000, 99_000])
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--queries", type=int, default=640)
    args = parser.parse_args()
    use_data(args.data)
    ids, _, _, vectors = uci_window(0, 100_000)
    results = []
    for n in args.sizes:
        queries = vectors[n : n + args.queries]
        exact, exact_ms = timed_search(fill(ids[:n], vectors[:n], n + 1, args.nprobe)[0], queries)
        started = time.perf_counter()
        indexed_mirror, _ = fill(ids[:n], vectors[:n], min(20_000, n), args.nprobe)
        fill_s = time.perf_counter() - started
        indexed, indexed_ms = timed_search(indexed_mirror, queries)
        recall = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(exact, indexed, strict=True)]))
        # What ingest feels: the slowest 64-row upsert while the collection grows through the (re)trainings.
        _, stall_inline = fill(ids[:n], vectors[:n], min(20_000, n), args.nprobe, background=False, batch=64)
        _, stall_background = fill(ids[:n], vectors[:n], min(20_000, n), args.nprobe, batch=64)
        results.append({"rows": n, "exact_ms_per_batch": round(exact_ms, 1), "indexed_ms_per_batch": round(indexed_ms, 1),
                        "recall_at_31": round(recall, 4), "indexed_fill_s": round(fill_s, 1), "nprobe": args.nprobe,
                        "slowest_upsert_ms_training_inline": round(stall_inline, 1),
                        "slowest_upsert_ms_training_in_background": round(stall_background, 1)})
        print(json.dumps(results[-1]), flush=True)
    (CACHE / "mirror_search.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
