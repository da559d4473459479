"""The maintained kNN graph of the window: incremental adds, expiry, repair, rebuild."""

from __future__ import annotations

import numpy as np

from streamer.core.graph import knn_exact
from streamer.core.window_graph import WindowGraph
from tests.unit.helpers import blobs


def _feed(window: WindowGraph, x: np.ndarray, ids: list[str], limit: int, step: int = 25) -> None:
    for s in range(0, len(x), step):
        block = x[s : s + step]
        sims = block @ x[: s + step].T
        order = np.argsort(-sims, axis=1)[:, :limit]
        window.add(
            ids[s : s + step],
            ids[s : s + step],
            list(range(s, s + len(block))),
            block,
            [[ids[j] for j in row] for row in order],
            np.take_along_axis(sims, order, 1),
        )
        window.link_new_rows()


def _recall(window: WindowGraph, x: np.ndarray, ids: list[str]) -> float:
    export = window.export()
    pos = {h: i for i, h in enumerate(export.ids)}
    exact = knn_exact(x, window.k)
    hits = 0
    for row, hid in enumerate(ids):
        got = {export.ids[j] for j in export.table.indices[pos[hid]] if j >= 0}
        hits += len(got & {ids[j] for j in exact.indices[row]})
    return hits / (len(ids) * window.k)


def test_incremental_graph_equals_exact_graph() -> None:
    """Own lists from an exact search plus exact reverse updates give exactly the exact kNN graph."""
    x, _ = blobs(6, 100, dim=16, spread=0.4)
    ids = [str(i) for i in range(len(x))]
    window = WindowGraph(10, x.shape[1])
    _feed(window, x, ids, limit=11)
    assert _recall(window, x, ids) == 1.0


def test_expiry_then_repair_restores_exact_graph() -> None:
    """Removing the oldest rows leaves short rows; repair refills them from the window."""
    x, _ = blobs(4, 60, dim=16, spread=0.4)
    x = x[np.random.default_rng(2).permutation(len(x))]  # every blob arrives over the whole stream
    ids = [str(i) for i in range(len(x))]
    window = WindowGraph(8, x.shape[1])
    _feed(window, x, ids, limit=17)
    expired = window.expire(older_than_ms=60, max_size=10_000)
    assert expired == ids[:60]
    window.remove(expired)
    assert window.short_rows > 0
    window.repair()
    assert window.short_rows == 0
    assert _recall(window, x[60:], ids[60:]) == 1.0


def test_max_size_expires_the_oldest() -> None:
    """Beyond max_size the oldest event times expire first."""
    x, _ = blobs(1, 30, dim=8)
    window = WindowGraph(4, 8)
    window.add([str(i) for i in range(30)], ["t"] * 30, list(range(30)), x)
    assert window.expire(older_than_ms=0, max_size=25) == ["0", "1", "2", "3", "4"]


def test_slots_are_reused_after_removal() -> None:
    """Freed slots take new headlines; the export never points at a removed id."""
    x, _ = blobs(2, 40, dim=8)
    ids = [str(i) for i in range(80)]
    window = WindowGraph(5, 8, capacity=64)
    _feed(window, x, ids, limit=11, step=20)
    window.remove(ids[:20])
    window.add(["new1", "new2"], ["a", "b"], [100, 101], x[:2])
    window.repair()
    export = window.export()
    assert len(export.ids) == 62 and "0" not in export.ids
    assert export.table.indices.max() < 62


def test_rebuild_equals_exact_search() -> None:
    """A full rebuild gives exactly the exact kNN table."""
    x, _ = blobs(3, 30, dim=8)
    ids = [str(i) for i in range(90)]
    window = WindowGraph(6, 8)
    window.add(ids, ids, list(range(90)), x)
    window.rebuild()
    assert np.array_equal(np.sort(window.export().table.indices, 1), np.sort(knn_exact(x, 6).indices, 1))
    assert not window.needs_rebuild(0.25)


def test_readding_an_id_refreshes_it() -> None:
    """The same id twice is one row (a redelivered headline)."""
    x, _ = blobs(1, 5, dim=8)
    window = WindowGraph(2, 8)
    assert window.add(["a", "b"], ["t", "t"], [1, 2], x[:2]) == 2
    assert window.add(["a"], ["t2"], [3], x[2:3]) == 0
    assert len(window) == 2 and window.export().titles[0] == "t2"
