"""Fill .cache/bench/uci_0_<N>.npy (the first N UCI headlines, bundled model) in 10k chunks.

Chunks already cached (uci_<start>_10000.npy) are reused. Usage:
    .venv/bin/python bench/embed_cache.py [--rows 100000] [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_data_argument, cache_path, embeddings, uci_rows, use_data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    add_data_argument(parser)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    use_data(args.data)
    chunks = []
    for start in range(0, args.rows, 10_000):
        titles = [r["TITLE"] for r in uci_rows(start, 10_000)]
        chunks.append(embeddings(f"uci_{start}_10000", titles))
        print(f"rows {start}..{start + 10_000} ready", flush=True)
    np.save(cache_path(f"uci_0_{args.rows}"), np.concatenate(chunks))


if __name__ == "__main__":
    main()
