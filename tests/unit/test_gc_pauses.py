"""streamer_gc_pause_seconds: the interpreter's collections, timed while the hook is installed."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from streamer.observability.metrics import Metrics


def _count(metrics: Metrics, generation: str) -> float:
    value = metrics.registry.get_sample_value("streamer_gc_pause_seconds_count", {"generation": generation})
    return value or 0.0


def test_collections_are_timed_by_generation_only_while_installed() -> None:
    metrics = Metrics(CollectorRegistry())
    pauses = metrics.watch_gc().install()
    try:
        garbage = [[i] for i in range(10_000)]
        for item in garbage:
            item.append(item)  # cycles: only the collector frees them
        del garbage
        before = _count(metrics, "2")
        gc.collect(2)
        assert _count(metrics, "2") == before + 1
        total = metrics.registry.get_sample_value("streamer_gc_pause_seconds_sum", {"generation": "2"})
        assert total is not None and total > 0
    finally:
        pauses.remove()
    assert pauses not in gc.callbacks
    after = _count(metrics, "2")
    gc.collect(2)
    assert _count(metrics, "2") == after
