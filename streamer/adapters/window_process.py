"""The re-clustering window in a child process of its own (:class:`ProcessWindowCompute`).

A run is seconds of Python (graph upkeep, HDBSCAN's tree code, c-TF-IDF); in the service's
process that Python holds the GIL the event loop, the model workers and Milvus Lite's server
threads queue for. A child process has an interpreter of its own, started at nice +10, so a
run costs the same CPU and the ingest loop never waits for it (figures in docs/benchmarks.md).
Only the arrivals go in and the snapshot and summaries come back.

If the child dies, or a run fails inside it (which may leave the window half-updated), the
window is dropped with it: the call raises :class:`~streamer.core.window.WindowLost`, the next
one starts a fresh child, and the re-clusterer reads the window back from Milvus at its next
run, as after a restart.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import traceback
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from streamer.core.window import (
    ArrivalRows,
    CaughtUp,
    ReclusterConfig,
    WindowChange,
    WindowCompute,
    WindowLost,
)
from streamer.observability.logs import get_logger

log = get_logger(__name__)




#: A spawned child imports numpy, scipy, scikit-learn and hdbscan: seconds on a busy machine.
_START_TIMEOUT_S = 120.0
#: Far above the slowest run measured (docs/benchmarks.md); the service takes tracking.window_run_timeout_s.
DEFAULT_RUN_TIMEOUT_S = 900.0


class ProcessWindowCompute:
    """A :class:`WindowCompute` in a child process (spawned: no inherited threads or locks).

    Calls are blocking and one at a time (the re-clusterer's background thread makes them).
    Membership is mirrored here from what went in and what expired, so the catch-up read can
    ask ``hid in window`` without a round trip.
    """

    def __init__(
        self, config: ReclusterConfig, dim: int, *, niceness: int = 10, run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    ) -> None:
        """``run_timeout_s``: a run not answered by then is a hung child: it is killed, the call
        raises :class:`WindowLost`, and the next call starts a fresh child."""
        if run_timeout_s <= 0:
            raise ValueError(f"run_timeout_s must be positive, got {run_timeout_s}")
        self._run_timeout_s = run_timeout_s
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
            conn = self._conn  # close() may clear the attribute while this waits (shutdown mid-run)
            assert conn is not None
            try:
                conn.send((run_id, list(arrivals), caught_up))
                if not conn.poll(self._run_timeout_s):
                    raise TimeoutError(f"no answer within {self._run_timeout_s:g} s")
                status, payload = conn.recv()
            except TimeoutError as exc:
                self._lost(exc)
                raise WindowLost(f"the window process timed out in run {run_id}: {exc}") from exc
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


