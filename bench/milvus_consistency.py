"""What a neighbour search costs on a Milvus 2.3 server at each consistency level, right after a write.

Ingest writes a batch and searches its neighbours at once. A Strong search waits until the
server's query node has consumed every acknowledged write (its time tick); Bounded answers from
what is visible (at most ``common.gracefulTime``, 5 s, behind); ``RecentOverlayStore`` searches
Bounded and adds this process's recent writes (streamer/adapters/milvus/recent.py). Each round
upserts ``--batch`` random unit vectors and searches them (top 31), ``--rounds`` rounds per mode,
``--pause-ms`` apart (50 headlines/s in batches of 4 is one batch every 80 ms). Prints one JSON
object: per mode, p50/p99 milliseconds of the search and the share of rounds whose every vector
found itself first (what ingest needs: an arrival's own batch is searchable).

Usage: PYTHONPATH=. .venv/bin/python bench/milvus_consistency.py [--rounds 40] [--batch 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import milvus_server_class  # noqa: E402

from streamer.adapters.milvus.recent import RecentOverlayStore  # noqa: E402
from streamer.adapters.milvus.store import MilvusStore  # noqa: E402
from streamer.config.connections import MilvusSettings  # noqa: E402
from streamer.domain.headline import Headline  # noqa: E402


def measure(store: Any, search: Any, rounds: int, batch: int, pause_s: float, rng: np.random.Generator, dim: int) -> dict[str, float]:
    took: list[float] = []
    found_self = 0
    for _ in range(rounds):
        vectors = rng.normal(size=(batch, dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        heads = [Headline(id=uuid.uuid4().hex, title="probe") for _ in range(batch)]
        store.upsert(heads, vectors)
        started = time.perf_counter()
        ids, _ = search(vectors)
        took.append(1000 * (time.perf_counter() - started))
        found_self += all(row and row[0] == h.id for row, h in zip(ids, heads, strict=True))
        time.sleep(pause_s)
    return {"p50_ms": round(float(np.percentile(took, 50)), 1), "p99_ms": round(float(np.percentile(took, 99)), 1),
            "own_batch_found": round(found_self / rounds, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pause-ms", type=float, default=80)
    parser.add_argument("--dim", type=int, default=384)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"rounds": args.rounds, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp, milvus_server_class()(Path(tmp) / "milvus") as server:
        server.start(timeout_s=300)
        settings = MilvusSettings(uri=server.uri, collection=f"probe_{uuid.uuid4().hex[:8]}")
        with MilvusStore(settings, args.dim) as store:
            try:
                seed = rng.normal(size=(2000, args.dim)).astype(np.float32)  # a window's worth of rows first
                store.upsert([Headline(id=f"s{i}", title="seed") for i in range(2000)],
                             seed / np.linalg.norm(seed, axis=1, keepdims=True))
                overlay = RecentOverlayStore(store, keep_s=10.0)
                for mode in ("Strong", "Session", "Bounded"):
                    result[mode] = measure(store, lambda v, m=mode: store.search(v, 31, consistency=m), args.rounds,
                                           args.batch, args.pause_ms / 1000, rng, args.dim)
                result["Bounded + recent overlay"] = measure(overlay, lambda v: overlay.search(v, 31), args.rounds,
                                                             args.batch, args.pause_ms / 1000, rng, args.dim)
            finally:
                store.drop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
