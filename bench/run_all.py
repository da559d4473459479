"""`make bench`: every benchmark in docs/benchmarks.md, one after another (about 45 minutes).

Run it on a quiet machine: the streaming latency and the scale cases are sensitive to other load.
``--data DIR`` (where the UCI News Aggregator parts are; see bench/common.py) is passed to every step:
    .venv/bin/python bench/run_all.py [--data DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import add_data_argument  # noqa: E402

STEPS = [
    ["embed_cache.py", "--rows", "100000"],
    ["quality.py"],
    ["tutorial_vs_streamer.py", "--sizes", "1000", "2000", "10000", "20000"],
    ["scale.py"],
    ["stream_e2e.py", "--n", "3000", "--latency-s", "60"],
    ["stream_quality.py", "--rows", "30000"],
]


def main() -> int:
    parser = argparse.ArgumentParser(description="every benchmark in docs/benchmarks.md, one after another")
    add_data_argument(parser)
    args = parser.parse_args()
    for step in STEPS:
        command = [*step, "--data", str(args.data)]
        print(f"== bench/{' '.join(command)}", flush=True)
        code = subprocess.run([sys.executable, str(HERE / step[0]), *command[1:]], cwd=HERE.parent).returncode
        if code != 0:
            print(f"bench/{step[0]} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
