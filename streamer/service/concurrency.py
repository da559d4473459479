"""Hand blocking work (model inference, HDBSCAN, synchronous pymilvus calls) to threads.

The event loop only waits on I/O. Everything CPU-bound or blocking goes through
:class:`BlockingRunner`, which owns one bounded thread pool so that the number of
threads competing with the event loop is a setting, not an accident.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

__all__ = ["BlockingRunner", "wait_for_any"]

P = ParamSpec("P")
T = TypeVar("T")


class BlockingRunner:
    """A bounded executor with a typed ``run`` coroutine.

    Parameters
    ----------
    max_workers:
        Threads available to blocking work. Torch and faiss parallelise inside
        one call, so a small number (2) is right on small machines.
    niceness:
        Scheduling niceness added to the pool's threads (Linux schedules threads
        one by one). Background work such as re-clustering runs at +10 so that
        the ingest path keeps its cores when both want them.
    """

    def __init__(self, max_workers: int = 2, *, name: str = "streamer-blocking", niceness: int = 0) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        if niceness < 0:
            raise ValueError(f"niceness must be >= 0 (raising priority needs privileges), got {niceness}")
        self._executor = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=name, initializer=_lower_priority, initargs=(niceness,)
        )

    async def run(self, func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``func(*args, **kwargs)`` in the pool and await its result (context vars travel along)."""
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, func, *args, **kwargs)
        return await loop.run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        """Stop accepting work; running calls finish. Idempotent."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _lower_priority(niceness: int) -> None:
    if niceness and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        except OSError:  # not allowed or not supported here: run at normal priority
            pass


async def wait_for_any(*events: asyncio.Event, timeout_s: float | None = None) -> bool:
    """Wait until one of ``events`` is set or ``timeout_s`` passes; True if an event fired."""
    if any(e.is_set() for e in events):
        return True
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
