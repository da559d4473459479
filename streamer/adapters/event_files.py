"""A finished run's folder as events for the read model (``streamer serve --from DIR``).

Either the events ``make demo-stream`` saved (``events/*.jsonl``), or a batch report
(``assignments.csv`` + ``clusters.json`` of ``streamer cluster``) turned into the events a single
run would have published.
"""

from __future__ import annotations

import csv
import heapq
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamer.core.readmodel import ReadModel
from streamer.domain.errors import InputError
from streamer.domain.events import (
    AssignmentEvent,
    ClusterEvent,
    ClusterEventType,
    decode_event,
)
from streamer.domain.headline import now_ms
from streamer.domain.views import FeedProgress
from streamer.observability.logs import get_logger

__all__ = ["EVENT_FILES", "load_folder"]

log = get_logger(__name__)


#: File names ``make demo-stream`` saves the output topics under (``<out>/events/``).
EVENT_FILES = {"assignment": "headline-assignments.jsonl", "cluster": "cluster-events.jsonl"}


def load_folder(path: Path, model: ReadModel) -> FeedProgress:
    """Apply a finished run's events to ``model``: saved topics if there are any, else the batch report."""
    progress = FeedProgress(source=f"folder {path}", caught_up=True)
    events_dir = path / "events"
    if any((events_dir / name).exists() for name in EVENT_FILES.values()):
        streams = [_read_jsonl(events_dir / name, kind) for kind, name in EVENT_FILES.items()]
        # The two topics interleaved by when each event was emitted: the order a live reader saw.
        for event in heapq.merge(*streams, key=lambda e: e.emitted_at_ms):
            model.apply(event)
            progress.applied += 1
    elif (path / "assignments.csv").exists() and (path / "clusters.json").exists():
        for event in _batch_events(path):
            model.apply(event)
            progress.applied += 1
    else:
        raise InputError(
            f"{path}: no events/{EVENT_FILES['assignment']} (make demo-stream) and no assignments.csv + "
            "clusters.json (streamer cluster): nothing to serve"
        )
    log.info("folder loaded", path=str(path), events=progress.applied, topics=model.live_topic_count())
    return progress


def _read_jsonl(path: Path, kind: str) -> Iterator[AssignmentEvent | ClusterEvent]:
    """Events of one saved topic in file order, each stream sorted by emission for the merge."""
    if not path.exists():
        return iter(())
    events = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                events.append(decode_event(kind, line))
            except (ValueError, ValidationError) as exc:
                raise InputError(f"{path}:{number}: not a valid {kind} event: {str(exc)[:200]}") from exc
    events.sort(key=lambda e: e.emitted_at_ms)  # stable: one headline's events keep their order
    return iter(events)


def _batch_events(path: Path) -> Iterator[AssignmentEvent | ClusterEvent]:
    """The events one run of the batch report amounts to: created per cluster, one assignment per row."""
    try:
        clusters: list[dict[str, Any]] = json.loads((path / "clusters.json").read_text(encoding="utf-8"))["clusters"]
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{path / 'clusters.json'}: cannot read the clusters: {exc}") from exc
    emitted = now_ms()
    for c in clusters:
        yield ClusterEvent.make(
            type=ClusterEventType.CREATED,
            cluster_id=int(c["cluster_id"]),
            run_id=1,
            size=int(c["size"]),
            keywords=list(c["keywords"]),
            exemplar_id=c["exemplar_id"],
            exemplar_title=c["exemplar_title"],
            persistence=float(c["persistence"]),
            emitted_at_ms=emitted,
        )
    with (path / "assignments.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            cluster = int(row["cluster"])
            yield AssignmentEvent(
                event_id=f"batch|{row['id']}",
                headline_id=row["id"],
                cluster_id=cluster,
                status="noise" if cluster < 0 else "assigned",
                probability=float(row["probability"]),
                run_id=1,
                reason="recluster",
                title=row["title"],
                emitted_at_ms=emitted,
            )


