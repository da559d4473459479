"""The Milvus collection streamer keeps: its schema, its index, and the check of an existing one."""

from __future__ import annotations

from typing import Any

from streamer.config.connections import MilvusSettings
from streamer.domain.errors import SchemaMismatchError

__all__ = ["SCALAR_FIELDS", "VARCHAR_BYTES", "check_schema", "collection_schema", "index_params"]


def collection_schema(dim: int) -> Any:
    """One row per headline: the id as primary key, the vector, and the fields the window reads back."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=VARCHAR_BYTES["id"])
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    for name in ("title", "text", "source"):
        schema.add_field(name, DataType.VARCHAR, max_length=VARCHAR_BYTES[name])
    for name in ("published_at", "event_time", "ingested_at"):
        schema.add_field(name, DataType.INT64)
    return schema


def index_params(client: Any, settings: MilvusSettings) -> Any:
    """The vector index the settings ask for (HNSW, IVF_FLAT or FLAT) with its build parameters."""
    s = settings
    params: dict[str, Any] = {}
    if s.index_type == "HNSW":
        params = {"M": s.hnsw_m, "efConstruction": s.hnsw_ef_construction}
    elif s.index_type == "IVF_FLAT":
        params = {"nlist": s.ivf_nlist}
    index_params = client.prepare_index_params()
    index_params.add_index(field_name="vector", index_type=s.index_type, metric_type=s.metric, params=params)
    return index_params


def check_schema(name: str, described: dict[str, Any], dim: int) -> None:
    """Refuse an existing collection whose fields or vector dimension are not streamer's."""
    found = {f["name"]: f for f in described.get("fields", [])}
    expected = {"id", "vector", *SCALAR_FIELDS}
    if set(found) != expected:
        raise SchemaMismatchError(
            f"collection {name!r} exists with fields {sorted(found)}, but streamer needs {sorted(expected)}: "
            "use another milvus.collection or drop the old one"
        )
    params = found["vector"].get("params", {})
    existing_dim = int(params.get("dim", -1))
    if existing_dim != dim:
        raise SchemaMismatchError(
            f"collection {name!r} holds {existing_dim}-d vectors but the embedding model makes "
            f"{dim}-d vectors: use another milvus.collection or drop the old one"
        )


SCALAR_FIELDS = ("title", "text", "source", "published_at", "event_time", "ingested_at")


VARCHAR_BYTES = {"id": 512, "title": 4096, "text": 65535, "source": 2048}


