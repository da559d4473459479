"""The blocking half of a re-clustering run: the window, its graph, HDBSCAN, the snapshot.

:class:`WindowCompute` owns the window (:class:`~streamer.core.window_graph.WindowGraph`): it
takes in the arrivals buffered since the last run, expires what left the window, keeps the kNN
graph up to date, runs HDBSCAN, summarises the clusters and freezes a snapshot, and returns
what the rest of the run needs (:class:`ComputedRun`: no vectors, no graph).
:class:`WindowComputer` is where the window lives: here, or in a child process
(:class:`streamer.adapters.window_process.ProcessWindowCompute`, what the service uses).
Pure: no I/O, deterministic for a given input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamer.core.clustering import Clustering, HdbscanParams, run_hdbscan
from streamer.core.graph import build_distance_graph
from streamer.core.snapshot import Snapshot, build_snapshot
from streamer.core.summaries import ClusterSummary, summarise_clusters
from streamer.core.window_graph import WindowGraph
from streamer.domain.ports import Arrivals

__all__ = [
    "ArrivalRows",
    "CaughtUp",
    "ComputedRun",
    "WindowCompute",
    "WindowComputer",
    "WindowLost",
]



#: Rows read back from Milvus: ids, vectors, and each row's fields (title, event_time).
CaughtUp = tuple[list[str], np.ndarray, list[dict[str, Any]]]


@dataclass(frozen=True)
class ArrivalRows:
    """A processed batch as the window takes it in: plain lists and arrays, cheap to pickle."""

    ids: list[str]
    titles: list[str]
    event_times_ms: list[int]
    vectors: np.ndarray
    neighbour_ids: list[list[str]] | None = None
    neighbour_sims: np.ndarray | None = None

    @classmethod
    def from_arrivals(cls, arrivals: Arrivals) -> ArrivalRows:
        hs = arrivals.headlines
        return cls(
            ids=[h.id for h in hs],
            titles=[h.title for h in hs],
            event_times_ms=[h.event_time_ms for h in hs],
            vectors=arrivals.vectors,
            neighbour_ids=arrivals.neighbour_ids,
            neighbour_sims=arrivals.neighbour_sims,
        )


@dataclass(frozen=True)
class ComputedRun:
    """A run's clustering of the window, positions 0..n-1 in ``ids`` order."""

    ids: list[str]
    titles: list[str]
    event_times_ms: np.ndarray
    clustering: Clustering
    snapshot: Snapshot
    summaries: list[ClusterSummary]


@dataclass(frozen=True)
class WindowChange:
    """What a call did to the window: the run (when enough points are left) and what expired."""

    computed: ComputedRun | None
    expired: list[str]


class WindowLost(RuntimeError):
    """The window's process died or failed a run; a fresh one starts empty (read the window back)."""


class WindowComputer(Protocol):
    """Where the window lives; the re-clusterer only asks it for runs and membership."""

    def __len__(self) -> int: ...

    def __contains__(self, headline_id: object) -> bool: ...

    def compute(self, run_id: int, arrivals: Sequence[ArrivalRows], caught_up: CaughtUp) -> WindowChange: ...

    def close(self) -> None: ...


class WindowCompute:
    """The window and the blocking part of a run, in this process."""

    def __init__(self, config: ReclusterConfig, dim: int) -> None:
        self._config = config
        self.window = WindowGraph(config.k, dim)

    def __len__(self) -> int:
        return len(self.window)

    def __contains__(self, headline_id: object) -> bool:
        return headline_id in self.window

    def close(self) -> None:
        pass

    def _take_in(self, arrivals: Sequence[ArrivalRows], caught_up: CaughtUp) -> None:
        window = self.window
        for rows in arrivals:
            window.add(rows.ids, rows.titles, rows.event_times_ms, rows.vectors, rows.neighbour_ids, rows.neighbour_sims)
        ids, vectors, fields = caught_up
        fresh = [i for i, hid in enumerate(ids) if hid not in window]
        if fresh:
            window.add(
                [ids[i] for i in fresh],
                [str(fields[i]["title"]) for i in fresh],
                [int(fields[i]["event_time"]) for i in fresh],
                vectors[fresh],
            )

    def compute(self, run_id: int, arrivals: Sequence[ArrivalRows], caught_up: CaughtUp) -> WindowChange:
        """Take the arrivals in, expire, bring the graph up to date and cluster (when enough points)."""
        c = self._config
        window = self.window
        self._take_in(arrivals, caught_up)
        expired: list[str] = []
        if len(window):
            # Event time, not wall-clock time: a replayed stream expires by its own clock.
            expired = window.expire(window.newest_event_time_ms() - int(c.window_s * 1000), c.max_window_size)
            window.remove(expired)
        if len(window) < c.min_points:
            return WindowChange(None, expired)
        if window.short_rows > c.drift_share * len(window) or window.needs_rebuild(c.drift_share):
            method = c.graph_method
            if method in ("auto", "milvus"):  # the window's own vectors are here: no need to ask Milvus
                method = "ivf" if len(window) >= c.approx_threshold else "exact"
            window.rebuild(method=method)
        else:
            window.repair()
            window.link_new_rows()
        export = window.export()
        graph = build_distance_graph(export.table)
        clustering = run_hdbscan(graph, c.params)
        summaries = summarise_clusters(export.ids, export.titles, export.vectors, clustering, c.keywords)
        snapshot = build_snapshot(run_id, export.ids, graph, clustering, c.params.min_samples, c.params.attach_similarity)
        computed = ComputedRun(export.ids, export.titles, export.event_times_ms, clustering, snapshot, summaries)
        return WindowChange(computed, expired)


@dataclass(frozen=True)
class ReclusterConfig:
    k: int = 15
    graph_method: str = "auto"
    approx_threshold: int = 50_000
    params: HdbscanParams = field(default_factory=HdbscanParams)
    min_points: int = 50
    keywords: int = 8
    window_s: float = 86_400.0
    max_window_size: int = 100_000
    interval_s: float = 60.0
    every_n: int = 1000
    every_unplaced: int = 200
    delete_expired: bool = True
    drift_share: float = 0.25
    state_topic: str = "streamer-state"
    #: Read rows other instances wrote at every run (a shared Milvus server); False: only at the first.
    catch_up_every_run: bool = True
    #: Ingest runs in other processes and forwards its batches (the split topology): a window
    #: headline whose arrival event the re-clusterer has not heard of yet is left to the next run,
    #: since downstream may hold an arrival event it has not seen. One run later it is published.
    arrivals_forwarded: bool = False
    #: A takeover writes its claim, waits this long (longer than a deposed leader takes to see the
    #: claim on the state topic), then reads the state: see Reclusterer.take_over.
    takeover_grace_s: float = 3.0
    #: A headline this much older than the window's newest keeps the topic it was published in
    #: (:func:`streamer.core.publishing.republish`); 0 = every change is published.
    settle_s: float = 12 * 3600.0


