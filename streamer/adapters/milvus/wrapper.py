"""What a store wrapper that answers searches itself passes through unchanged.

:class:`~streamer.adapters.milvus.mirror.MirroredStore` (Milvus Lite) and
:class:`~streamer.adapters.milvus.recent.RecentOverlayStore` (a server) change how the
arrivals' neighbour searches are answered and keep their own copies in step with writes;
every other read goes to the wrapped :class:`~streamer.adapters.milvus.store.MilvusStore`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["StoreWrapper"]


class StoreWrapper:
    """Reads that need no local copy, answered by the wrapped store as it is."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def fetch_all(self) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        return self._store.fetch_all()

    def ids_since(self, ingested_at_ms: int) -> list[str]:
        return self._store.ids_since(ingested_at_ms)

    def fetch_rows(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        return self._store.fetch_rows(ids)

    def count(self) -> int:
        return self._store.count()

    def close(self) -> None:
        self._store.close()
