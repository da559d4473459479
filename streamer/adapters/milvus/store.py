"""Milvus adapter: one row per headline, keyed by the headline's own id.

The URI decides the deployment: a ``*.db`` path is Milvus Lite (embedded, one
process per file), ``http(s)://host:port`` is a Milvus server. The code path is
the same; only :class:`pymilvus.MilvusClient` differs in what it talks to.

Collection schema (``id`` is the primary key, so re-ingesting is an idempotent upsert):

==============  ===============  ==========================================
field           type             meaning
==============  ===============  ==========================================
id              VARCHAR(512)     headline id (guid / ID column / content hash)
vector          FLOAT_VECTOR     unit-length embedding, dim from the model
title           VARCHAR(4096)    headline title
text            VARCHAR(65535)   the embedded text (title + description)
source          VARCHAR(2048)    venue / publisher ('' if unknown)
published_at    INT64            epoch ms, -1 if unknown
event_time      INT64            epoch ms the window uses (published_at, else ingested_at)
ingested_at     INT64            epoch ms streamer first saw it
==============  ===============  ==========================================

Similarities come back as Milvus reports them for COSINE/IP (higher is closer).
Only this module imports pymilvus.

Milvus Lite keeps rows in a memtable until 128 MB of them pile up, and searching that
memtable converts every row to Python floats: 260 ms for 5 queries over 3k rows, ~1 s
over 20k. Its flushed segments are searched with numpy (~30 ms). On Lite the store
therefore flushes after every ``milvus.lite_flush_rows`` upserted rows (Lite compacts the
small segments in the background); a server gets no flushes (it seals segments itself).
When :mod:`streamer.adapters.milvus.mirror` answers the searches, Lite's search speed no longer matters and
flushing is CPU the model needs, so the default flushes 4 times less often, every 1,024 rows.
Not less often than that: a flush blocks Lite's writers, ~0.2 s per 1,024 rows and ~0.7 s per
4,096 (Lite costs the same CPU per row either way up to ~6k rows; ``bench/lite_write.py``).
With write-behind (``milvus.lite_write_behind``) the stall delays commits rather than events,
but a longer one holds back every write queued behind it, and ingest once
``lite_write_behind_rows`` wait. Unflushed rows are safe from a crash: Lite writes them to its
write-ahead log first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from streamer.adapters.milvus.collection import (
    SCALAR_FIELDS,
    VARCHAR_BYTES,
    check_schema,
    collection_schema,
    index_params,
)
from streamer.config.connections import MilvusSettings
from streamer.domain.errors import StoreError
from streamer.domain.headline import Headline
from streamer.observability.logs import get_logger

__all__ = ["MilvusStore", ]

log = get_logger(__name__)

_UNKNOWN_TIME = -1
_FETCH_CHUNK = 4096


@contextmanager
def _translate_errors(operation: str, collection: str) -> Iterator[None]:
    """Turn pymilvus and transport exceptions into :class:`StoreError` (cause kept)."""
    try:
        yield
    except (StoreError, ValueError):
        raise
    except Exception as exc:  # pymilvus raises MilvusException, grpc errors and plain Exceptions
        raise StoreError(f"Milvus {operation} on collection {collection!r} failed: {exc}") from exc


def _clip_utf8(text: str, max_bytes: int) -> str:
    encoded = text.encode("utf-8")
    return text if len(encoded) <= max_bytes else encoded[:max_bytes].decode("utf-8", errors="ignore")


class MilvusStore:
    """Headline vectors in one Milvus collection.

    Parameters
    ----------
    settings:
        The milvus section of the settings.
    dim:
        Vector dimension of the embedding model; an existing collection with another
        dimension is refused with :class:`SchemaMismatchError`.
    """

    def __init__(self, settings: MilvusSettings, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        self._settings = settings
        self._dim = dim
        self._name = settings.collection
        self._client: Any = None
        self._rows_since_flush = 0

    # -- lifecycle -------------------------------------------------------------------------
    def open(self) -> MilvusStore:
        """Connect and create or validate the collection. Idempotent."""
        if self._client is not None:
            return self
        import logging

        from pymilvus import MilvusClient

        # pymilvus warns on every query_iterator against Milvus Lite that it fell back to a
        # client-side timestamp (Lite has no AllocTimestamp); harmless, and it floods the logs.
        logging.getLogger("pymilvus.client.iterator.query_iterator").setLevel(logging.ERROR)
        if not self._settings.is_server:
            from pathlib import Path

            Path(self._settings.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        with _translate_errors("connect", self._name):
            token = self._settings.token.get_secret_value() if self._settings.token else ""
            self._client = MilvusClient(
                uri=self._settings.uri, token=token, db_name=self._settings.db_name, timeout=self._settings.timeout_s
            )
        try:
            self._ensure_collection()
        except Exception:
            self.close()
            raise
        log.info(
            "milvus collection ready",
            collection=self._name,
            deployment="server" if self._settings.is_server else "lite",
            dim=self._dim,
            index=self._settings.index_type,
        )
        return self

    def close(self) -> None:
        """Release the connection. Idempotent."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing a dead connection must not mask the original error
                log.warning("milvus close failed", error=str(exc))

    def __enter__(self) -> MilvusStore:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def client(self) -> Any:
        if self._client is None:
            raise StoreError("MilvusStore is not open: call open() or use it as a context manager")
        return self._client

    @property
    def dim(self) -> int:
        return self._dim

    # -- collection --------------------------------------------------------------------------
    def _ensure_collection(self) -> None:
        with _translate_errors("describe", self._name):
            exists = self.client.has_collection(self._name)
        if not exists:
            with _translate_errors("create_collection", self._name):
                self.client.create_collection(
                    collection_name=self._name,
                    schema=collection_schema(self._dim),
                    index_params=index_params(self.client, self._settings),
                    consistency_level=self._settings.consistency,
                )
            return
        with _translate_errors("describe", self._name):
            described = self.client.describe_collection(self._name)
        check_schema(self._name, described, self._dim)
        with _translate_errors("load", self._name):
            self.client.load_collection(self._name)

    def drop(self) -> None:
        """Delete the collection and everything in it."""
        with _translate_errors("drop_collection", self._name):
            if self.client.has_collection(self._name):
                self.client.drop_collection(self._name)

    # -- data ------------------------------------------------------------------------------
    def upsert(self, headlines: list[Headline], vectors: np.ndarray) -> None:
        """Insert or replace one row per headline (same id -> same row)."""
        if len(headlines) != len(vectors):
            raise ValueError(f"{len(headlines)} headlines but {len(vectors)} vectors")
        if not headlines:
            return
        if vectors.ndim != 2 or vectors.shape[1] != self._dim:
            raise ValueError(f"vectors must be (n, {self._dim}), got {vectors.shape}")
        rows = [
            {
                "id": h.id,
                "vector": vectors[i].astype(np.float32, copy=False).tolist(),
                "title": _clip_utf8(h.title, VARCHAR_BYTES["title"]),
                "text": _clip_utf8(h.text, VARCHAR_BYTES["text"]),
                "source": _clip_utf8(h.source or "", VARCHAR_BYTES["source"]),
                "published_at": h.published_at_ms if h.published_at_ms is not None else _UNKNOWN_TIME,
                "event_time": h.event_time_ms,
                "ingested_at": h.ingested_at_ms,
            }
            for i, h in enumerate(headlines)
        ]
        with _translate_errors("upsert", self._name):
            self.client.upsert(collection_name=self._name, data=rows)
        self._rows_since_flush += len(rows)
        flush_rows = self._settings.lite_flush_every
        if not self._settings.is_server and flush_rows and self._rows_since_flush >= flush_rows:
            with _translate_errors("flush", self._name):
                self.client.flush(collection_name=self._name)
            self._rows_since_flush = 0

    def _search_params(self) -> dict[str, Any]:
        s = self._settings
        params: dict[str, Any] = {}
        if s.index_type == "HNSW":
            params = {"ef": s.search_ef}
        elif s.index_type == "IVF_FLAT":
            params = {"nprobe": s.ivf_nprobe}
        return {"metric_type": s.metric, "params": params}

    def search(
        self, vectors: np.ndarray, limit: int, consistency: str | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-``limit`` neighbours of each query vector, at ``consistency`` (default: the setting).

        Returns
        -------
        ids:
            ``ids[q]`` lists neighbour ids, most similar first (may be shorter than ``limit``).
        similarities:
            (nq, limit) float32, aligned with ``ids``; missing slots are ``-inf``.
        """
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        nq = len(vectors)
        sims = np.full((nq, limit), -np.inf, dtype=np.float32)
        all_ids: list[list[str]] = []
        params = self._search_params()
        if self._settings.index_type == "HNSW":
            params["params"]["ef"] = max(self._settings.search_ef, limit)
        for start in range(0, nq, self._settings.search_batch):
            batch = vectors[start : start + self._settings.search_batch]
            with _translate_errors("search", self._name):
                results = self.client.search(
                    collection_name=self._name,
                    data=[v.astype(np.float32, copy=False).tolist() for v in batch],
                    limit=limit,
                    search_params=params,
                    output_fields=[],
                    consistency_level=consistency or self._settings.consistency,
                )
            for offset, hits in enumerate(results):
                row_ids = [str(hit["id"]) for hit in hits]
                row_sims = [float(hit["distance"]) for hit in hits]
                all_ids.append(row_ids)
                sims[start + offset, : len(row_sims)] = row_sims
        return all_ids, sims

    def fetch_all(self, fields: tuple[str, ...] = SCALAR_FIELDS) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """Read back every row (ids, (n, dim) float32 vectors, scalar fields), in batches.

        Bulk kNN work reads vectors back and searches them locally: far faster than
        N Milvus searches (see docs/benchmarks.md).
        """
        return self._iterate('id != ""', fields)

    def ids_since(self, ingested_at_ms: int) -> list[str]:
        """Ids of the rows ingested at or after ``ingested_at_ms``, without their vectors (the
        re-clusterer's catch-up read; it fetches only the rows it lacks, with :meth:`fetch_rows`)."""
        return self._ids_where(f"ingested_at >= {int(ingested_at_ms)}")

    def _ids_where(self, expression: str) -> list[str]:
        with _translate_errors("query", self._name):
            rows = self.client.query(
                collection_name=self._name,
                filter=expression,
                output_fields=["id"],
                consistency_level=self._settings.consistency,
            )
        return [str(r["id"]) for r in rows]

    def fetch_rows(
        self, ids: list[str], fields: tuple[str, ...] = SCALAR_FIELDS
    ) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        """The given rows (ids, vectors, fields) in the layout of :meth:`fetch_all`; missing ids are left out.

        Read in chunks: a whole window's vectors in one reply would pass gRPC's message limit."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), _FETCH_CHUNK):
            found.update(self.fetch(ids[start : start + _FETCH_CHUNK], fields=("vector", *fields)))
        present = [hid for hid in ids if hid in found]
        matrix = np.asarray([found[hid]["vector"] for hid in present], dtype=np.float32).reshape(len(present), self._dim)
        rows = [{k: v for k, v in found[hid].items() if k not in ("id", "vector")} for hid in present]
        return present, matrix, rows

    def _iterate(self, expression: str, fields: tuple[str, ...]) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
        ids: list[str] = []
        vectors: list[list[float]] = []
        rows: list[dict[str, Any]] = []
        with _translate_errors("query_iterator", self._name):
            iterator = self.client.query_iterator(
                collection_name=self._name,
                batch_size=10_000,
                filter=expression,
                output_fields=["id", "vector", *fields],
                consistency_level=self._settings.consistency,
            )
            try:
                while batch := iterator.next():
                    for row in batch:
                        ids.append(str(row.pop("id")))
                        vectors.append(row.pop("vector"))
                        rows.append(row)
            finally:
                iterator.close()
        matrix = np.asarray(vectors, dtype=np.float32).reshape(len(ids), self._dim)
        return ids, matrix, rows

    def fetch(self, ids: list[str], fields: tuple[str, ...] = ("vector",)) -> dict[str, dict[str, Any]]:
        """Rows for the given ids (missing ids are absent from the result)."""
        if not ids:
            return {}
        with _translate_errors("get", self._name):
            rows = self.client.get(collection_name=self._name, ids=ids, output_fields=list(fields))
        return {str(row["id"]): row for row in rows}

    def ids_older_than(self, event_time_ms: int) -> list[str]:
        """Ids whose event_time is before ``event_time_ms`` (window expiry)."""
        return self._ids_where(f"event_time < {int(event_time_ms)}")

    def delete(self, ids: list[str]) -> None:
        """Remove rows by id; unknown ids are ignored."""
        if not ids:
            return
        with _translate_errors("delete", self._name):
            self.client.delete(collection_name=self._name, ids=list(ids))

    def count(self) -> int:
        """Rows in the collection, as of now (Strong read)."""
        with _translate_errors("count", self._name):
            rows = self.client.query(
                collection_name=self._name, filter="", output_fields=["count(*)"], consistency_level="Strong"
            )
        return int(rows[0]["count(*)"])

