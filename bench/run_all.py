"""`make bench`: every benchmark in docs/benchmarks.md, one after another (about 45 minutes).

Run it on a quiet machine: the streaming latency and the scale cases are sensitive to other load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STEPS = [
    ["embed_cache.py", "--rows", "100000"],
    ["quality.py"],
    ["tutorial_vs_streamer.py", "--sizes", "1000", "2000", "10000", "20000"],
    ["scale.py"],
    ["stream_e2e.py", "--n", "3000", "--latency-s", "60"],
    ["stream_quality.py", "--rows", "30000"],
]


def main() -> int:
    for step in STEPS:
        print(f"== bench/{' '.join(step)}", flush=True)
        code = subprocess.run([sys.executable, str(HERE / step[0]), *step[1:]], cwd=HERE.parent).returncode
        if code != 0:
            print(f"bench/{step[0]} failed with exit code {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
