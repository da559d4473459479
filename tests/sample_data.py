"""Headlines for the tests, from data inside the repository only.

The source is the bundled sample ``examples/uci-news-sample.tsv``: the first 2,000 rows of the UCI
News Aggregator Data Set (CC BY 4.0; attribution in ``examples/README.md``). Tests that need more
headlines than the sample holds replay it: message ``j`` of the stream is row ``j mod 2000``; the
first pass keeps the row's id (``uci-<ID>``), pass ``r > 0`` gets ``uci-<ID>-r<r>`` and its time
shifted by ``r`` times the sample's span (plus a minute), so every id is unique and the stream
stays in time order. A title recurs once per pass, as syndicated headlines do in a real feed.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
UCI_SAMPLE = REPO / "examples" / "uci-news-sample.tsv"
# The Milvus tutorial's news_data_dedup.csv layout (the file itself has no clear licence and is not shipped).
TUTORIAL_COLUMNS = ["guid", "title", "description", "venue", "url", "published_at", "updated_at"]


@functools.cache
def sample_rows() -> tuple[dict[str, str], ...]:
    """The sample's rows in file (= time) order, as read by csv (tab-separated, no quoting)."""
    with UCI_SAMPLE.open(encoding="utf-8", newline="") as f:
        return tuple(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def _span_ms() -> int:
    stamps = [int(r["TIMESTAMP"]) for r in sample_rows()]
    return max(stamps) - min(stamps) + 60_000


def uci_stream(skip: int = 0) -> Iterator[dict[str, Any]]:
    """Headline messages ``skip, skip+1, ...`` of the (endlessly replayed) sample."""
    rows, span = sample_rows(), _span_ms()
    for j in itertools.count(skip):
        replay, row = divmod(j, len(rows))
        r = rows[row]
        suffix = f"-r{replay}" if replay else ""
        yield {
            "id": f"uci-{r['ID']}{suffix}",
            "title": r["TITLE"],
            "source": r["PUBLISHER"],
            "published_at": int(r["TIMESTAMP"]) + replay * span,
        }


def uci_messages(n: int, skip: int = 0) -> list[dict[str, Any]]:
    """``n`` headline messages starting at message ``skip`` (see the module docstring)."""
    return list(itertools.islice(uci_stream(skip), n))


def write_tutorial_csv(path: Path, n: int) -> list[dict[str, str]]:
    """Write the sample's first ``n`` rows in the tutorial CSV's layout; returns the rows written.

    guid is an md5 hex digest (as in the tutorial), the description restates the headline with its
    publisher in quotes and commas (the tutorial's descriptions need CSV quoting too), venue is
    the publisher, and the times are the tutorial's ``YYYY-MM-DD HH:MM:SS+00``.
    """
    written = []
    for r in sample_rows()[:n]:
        when = dt.datetime.fromtimestamp(int(r["TIMESTAMP"]) / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S+00")
        written.append({
            "guid": hashlib.md5(r["ID"].encode()).hexdigest(),
            "title": r["TITLE"],
            "description": f'{r["TITLE"]}, says "{r["PUBLISHER"]}".',
            "venue": r["PUBLISHER"],
            "url": f"https://{r['HOSTNAME']}/",
            "published_at": when,
            "updated_at": when,
        })
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TUTORIAL_COLUMNS)
        writer.writeheader()
        writer.writerows(written)
    return written
