"""What writing to Milvus Lite costs the service's cores, per headline (docs/benchmarks.md).

milvus-lite runs inside the service's own process: its gRPC server is Python threads beside
the ingest loop, so every upsert is packed to protobuf by pymilvus, unpacked and stored by Lite,
and every ``milvus.lite_flush_rows`` rows the memtable is written out as Parquet, all on the
service's CPU (and mostly under its GIL). This writes ``--rows`` UCI headlines (real titles and
vectors) through ``MilvusStore`` in upserts of ``--batch`` rows (64: one micro-batch, as the
ingest loop writes them, write-behind or not) and reports the process CPU time (all threads)
per flush setting and upsert size.

Usage: .venv/bin/python bench/lite_write.py [--rows 6000] [--flush-rows 4096 1024 0] [--batch 64 512] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_argument, uci_window, use_data  # noqa: E402

from streamer.adapters.milvus.store import MilvusStore
from streamer.config.connections import MilvusSettings
from streamer.domain.headline import Headline


def measure(headlines: list[Headline], vectors, flush_rows: int, batch: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as workdir:
        store = MilvusStore(MilvusSettings(uri=f"{workdir}/lite.db", lite_flush_rows=flush_rows), vectors.shape[1])
        store.open()
        try:
            cpu, wall = time.process_time(), time.perf_counter()
            slowest = 0.0
            for start in range(0, len(headlines), batch):
                began = time.perf_counter()
                store.upsert(headlines[start : start + batch], vectors[start : start + batch])
                slowest = max(slowest, time.perf_counter() - began)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            store.close()
    n = len(headlines)
    return {"flush_rows": flush_rows, "batch": batch, "rows": n, "core_s": round(cpu, 2), "wall_s": round(wall, 2),
            "core_ms_per_headline": round(1000 * cpu / n, 3), "slowest_upsert_ms": round(1000 * slowest, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--rows", type=int, default=6000)
    parser.add_argument("--flush-rows", type=int, nargs="+", default=[4096, 2048, 1024, 512, 256, 0])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    args = parser.parse_args()
    use_data(args.data)
    ids, titles, _, vectors = uci_window(0, args.rows)
    headlines = [Headline(id=i, title=t, published_at_ms=0) for i, t in zip(ids, titles, strict=True)]
    # 4,096: the default with the search mirror (the service's Lite default); 256: without it;
    # 0: Lite's own memtable budget (no flush within a few thousand rows).
    results = [measure(headlines, vectors, flush, batch) for flush in args.flush_rows for batch in args.batch]
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
