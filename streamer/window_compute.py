"""The blocking half of a re-clustering run, in this process or in a child process of its own.

:class:`WindowCompute` owns the window (:class:`~streamer.window.WindowGraph`): it takes in the
arrivals buffered since the last run, expires what left the window, keeps the kNN graph up to
date, runs HDBSCAN, summarises the clusters and freezes a snapshot, and returns what the rest
of the run needs (:class:`ComputedRun`: no vectors, no graph).

:class:`ProcessWindowCompute` keeps that window in a child process. A run is seconds of Python
(the graph upkeep, HDBSCAN's tree code, c-TF-IDF), and inside the service's process that Python
holds the GIL which the event loop, the model workers and Milvus Lite's server threads all queue
for: every run stalled ingest by 0.5-1 s although it ran at low priority on a thread of its own
(docs/benchmarks.md, "Latency"). A child process has an interpreter of its own, so a run costs
the same CPU, at nice +10, and the ingest loop never waits for it. Only the arrivals (vectors and
neighbour lists, ~1.6 kB per headline) go in and the snapshot and summaries come back.

If the child dies, or a run fails inside it (which may leave the window half-updated), the
window is dropped with it: the call raises :class:`WindowLost`, the next one starts a fresh
child, and the re-clusterer reads the window back from Milvus at its next run, as after a
restart.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from streamer.batch import summarise_clusters
from streamer.clustering import Clustering, run_hdbscan
from streamer.graph import build_distance_graph
from streamer.logs import get_logger
from streamer.report import ClusterSummary
from streamer.snapshot import Snapshot, build_snapshot
from streamer.window import WindowGraph

if TYPE_CHECKING:
    from streamer.pipeline import Arrivals
    from streamer.recluster import ReclusterConfig

__all__ = [
    "ArrivalRows",
    "CaughtUp",
    "ComputedRun",
    "ProcessWindowCompute",
    "WindowCompute",
    "WindowComputer",
    "WindowLost",
]

log = get_logger(__name__)

#: A spawned child imports numpy, scipy, scikit-learn and hdbscan: seconds on a busy machine.
_START_TIMEOUT_S = 120.0

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


class ProcessWindowCompute:
    """A :class:`WindowCompute` in a child process (spawned: no inherited threads or locks).

    Calls are blocking and one at a time (the re-clusterer's background thread makes them).
    Membership is mirrored here from what went in and what expired, so the catch-up read can
    ask ``hid in window`` without a round trip.
    """

    def __init__(self, config: ReclusterConfig, dim: int, *, niceness: int = 10) -> None:
        self._config = config
        self._dim = dim
        self._niceness = niceness
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None
        self._ids: set[str] = set()

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, headline_id: object) -> bool:
        return headline_id in self._ids

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child (imports take a second or two; done at service start, not in a run)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._process is not None and self._process.is_alive():
            return
        parent, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=_serve,
            args=(child, self._config, self._dim),
            name="streamer-window",
            daemon=True,  # never outlives the service, even when it is not closed
        )
        _start_at_niceness(process, self._niceness)
        child.close()
        # Wait until it is ready (imports done, priority lowered): a child that cannot start
        # fails here, at service start, rather than in the first run.
        try:
            if not parent.poll(_START_TIMEOUT_S):
                raise RuntimeError(f"the window process did not start within {_START_TIMEOUT_S:.0f} s")
            parent.recv()
        except (EOFError, OSError, RuntimeError) as exc:
            process.kill()
            process.join()
            parent.close()
            raise RuntimeError(f"the window process could not start (exit code {process.exitcode}): {exc}") from exc
        self._process, self._conn = process, parent
        self._ids = set()
        log.info("window process started", pid=process.pid)

    def compute(self, run_id: int, arrivals: Sequence[ArrivalRows], caught_up: CaughtUp) -> WindowChange:
        with self._lock:
            self._start()
            assert self._conn is not None
            try:
                self._conn.send((run_id, list(arrivals), caught_up))
                status, payload = self._conn.recv()
            except (EOFError, OSError) as exc:
                self._lost(exc)
                raise WindowLost(f"the window process died during run {run_id}: {exc!r}") from exc
            if status != "ok":
                # The failure may have left the window half-updated (arrivals taken in, graph not
                # repaired): start over from the store rather than cluster a window in doubt.
                error = RuntimeError(payload)
                self._lost(error)
                raise WindowLost(f"re-clustering run {run_id} failed in the window process: {payload}")
        change: WindowChange = payload
        for rows in arrivals:
            self._ids.update(rows.ids)
        self._ids.update(caught_up[0])
        self._ids.difference_update(change.expired)
        return change

    def _lost(self, exc: BaseException) -> None:
        process, conn = self._process, self._conn
        exitcode = None
        if process is not None:
            if process.is_alive():  # exiting, or it failed a run and its window is in doubt
                process.kill()
            process.join(timeout=5)
            exitcode = process.exitcode
        if conn is not None:
            conn.close()
        log.error("window process lost; the window is read back from the store at the next run",
                  exitcode=exitcode, error=repr(exc))
        self._process = None
        self._conn = None
        self._ids = set()

    def close(self) -> None:
        """Stop the child: asked to when idle, terminated when a run is still computing.

        A run in progress at shutdown is not worth waiting for (a run at a 100k window takes
        tens of seconds); its results would be discarded, and the next start reads the window
        back from the store.
        """
        idle = self._lock.acquire(blocking=False)
        try:
            process, conn = self._process, self._conn
            self._process, self._conn = None, None
            if process is None:
                return
            if idle and conn is not None:
                try:
                    conn.send(None)
                except OSError:
                    pass
                process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():  # stopped or ignoring SIGTERM
                process.kill()
                process.join()
            if idle and conn is not None:
                conn.close()
            log.info("window process stopped", pid=process.pid, exitcode=process.exitcode)
        finally:
            if idle:
                self._lock.release()


def _start_at_niceness(process: multiprocessing.process.BaseProcess, niceness: int) -> None:
    """Start ``process`` from a thread already at ``niceness``: the child inherits it from the start.

    Lowering the child's priority from inside comes too late for the thread pools OpenBLAS and
    OpenMP create while numpy and scikit-learn are imported; those would run at normal priority.
    """
    if not niceness or not hasattr(os, "setpriority"):
        process.start()
        return
    failure: list[BaseException] = []

    def start() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, niceness)  # 0: this thread (Linux schedules threads)
        except OSError:  # not allowed here: the child runs at normal priority
            pass
        try:
            process.start()
        except BaseException as exc:  # re-raised in the caller's thread
            failure.append(exc)

    starter = threading.Thread(target=start, name="streamer-window-start")
    starter.start()
    starter.join()
    if failure:
        raise failure[0]


def _serve(conn: Connection, config: ReclusterConfig, dim: int) -> None:
    """The child's loop: one request at a time until ``None`` or the parent goes away.

    It inherits its priority from the thread that started it (:func:`_start_at_niceness`).
    """
    # Ctrl-C reaches the whole process group; the service decides when this process stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    compute = WindowCompute(config, dim)
    conn.send("ready")
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the service is gone
            return
        if request is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", compute.compute(*request))
        except Exception as exc:  # reported to the parent; the window stays as the failure left it
            reply = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}")
        try:
            conn.send(reply)
        except (BrokenPipeError, OSError):
            return
