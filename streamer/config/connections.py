"""Settings of the two servers streamer talks to: Milvus and Kafka (secrets as ``SecretStr``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from streamer.config.sections import SettingsSection, upper_case

__all__ = ["KafkaSettings", "MilvusSettings"]


class MilvusSettings(SettingsSection):
    """Where vectors live. A file path is Milvus Lite; http(s)://host:port is a Milvus server."""

    uri: str = Field(".streamer/milvus.db", description="Milvus Lite file (*.db) or http(s)://host:port.")
    token: SecretStr | None = Field(None, description="Server token ('user:password' or an API key).")
    db_name: str = Field("", description="Database on a Milvus server ('' = default).")
    collection: str = Field("headlines", pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
    metric: Literal["COSINE", "IP"] = Field(
        "COSINE",
        description="COSINE or IP on normalised vectors (L2 is refused: Milvus Lite materialises "
        "(queries x rows x dim) for it).",
    )
    index_type: Literal["FLAT", "HNSW", "IVF_FLAT", "AUTOINDEX"] = Field("FLAT")
    hnsw_m: int = Field(16, ge=4, le=64)
    hnsw_ef_construction: int = Field(200, ge=8, le=1024)
    search_ef: int = Field(64, ge=1, le=4096, description="HNSW ef at search time (>= limit).")
    ivf_nlist: int = Field(1024, ge=1, le=65536)
    ivf_nprobe: int = Field(16, ge=1, le=65536)
    consistency: Literal["Strong", "Bounded", "Session", "Eventually"] = Field(
        "Strong", description="Reads see every acknowledged write with Strong."
    )
    recent_overlay_s: float = Field(
        10.0,
        ge=0,
        le=3600,
        description="Milvus server only: the arrivals' neighbour searches are Bounded (no wait for the server's "
        "time tick, 300-500 ms per Strong search) plus an exact in-process search of the rows this process wrote "
        "in the last this many seconds. Keep it above the server's common.gracefulTime (5 s). 0 = Strong searches.",
    )
    timeout_s: float = Field(30.0, gt=0, le=600)
    search_batch: int = Field(256, ge=1, le=16384, description="Query vectors per Milvus search call.")
    lite_local_search: bool = Field(
        True,
        description="Milvus Lite only: answer the arrivals' neighbour searches from an in-process copy of the "
        "vectors (exact; Lite's own search is Python and slower than embedding). A server is always searched.",
    )
    lite_mirror_exact_below: int = Field(
        20_000,
        ge=1,
        description="Milvus Lite with lite_local_search: the in-process copy searches exactly below this many rows, "
        "then through an inverted-file index (exact search costs 326 ms per 64 arrivals at 100k rows).",
    )
    lite_mirror_nprobe: int = Field(
        32, ge=1, le=65_536, description="Inverted lists searched per query once the copy is indexed (more = higher recall)."
    )
    lite_write_behind: bool = Field(
        True,
        description="Milvus Lite with lite_local_search: publish a batch's events once the in-process copy holds "
        "it; its Lite write and the offset commit follow in order (a flush then delays commits, not events).",
    )
    lite_write_behind_rows: int = Field(
        1024,
        ge=1,
        description="Messages read (published or dead-lettered) whose Lite write and commit are still queued "
        "before ingest waits for the writes.",
    )
    lite_flush_rows: int | None = Field(
        None,
        ge=0,
        description="Milvus Lite only: flush after this many upserted rows. Lite searches unflushed rows slowly, "
        "and a flush blocks writes (~0.2 s per 1,024 rows, ~0.7 s per 4,096). Default: 256 when Lite answers "
        "searches, 1024 when the in-process copy does (lite_local_search). 0 = leave it to Lite's 128 MB budget.",
    )

    _upper_metric = field_validator("metric", "index_type", mode="before")(upper_case)

    @field_validator("consistency", mode="before")
    @classmethod
    def _capitalise(cls, value: Any) -> Any:
        return value.capitalize() if isinstance(value, str) else value

    @property
    def lite_flush_every(self) -> int:
        """``lite_flush_rows`` with its default resolved (see the setting)."""
        if self.lite_flush_rows is not None:
            return self.lite_flush_rows
        return 1024 if self.lite_local_search else 256

    @property
    def is_server(self) -> bool:
        return self.uri.startswith(("http://", "https://", "tcp://", "grpc://"))

    @model_validator(mode="after")
    def _lite_needs_db_suffix(self) -> MilvusSettings:
        if not self.is_server and not self.uri.endswith(".db"):
            raise ValueError(
                f"uri {self.uri!r} is neither a Milvus server (http(s)://host:port) nor a Milvus Lite file ending in .db"
            )
        return self


class KafkaSettings(SettingsSection):
    """Broker, topics, consumer group and security."""

    bootstrap_servers: str = Field("127.0.0.1:9092")
    client_id: str = Field("streamer")
    group_id: str = Field("streamer")
    input_topic: str = Field("headlines")
    assignments_topic: str = Field("headline-assignments")
    cluster_events_topic: str = Field("cluster-events")
    dead_letter_topic: str = Field("headlines-dlq")
    partitions: int = Field(6, ge=1, le=10_000, description="Partitions of topics streamer creates when missing.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field("PLAINTEXT")
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(None)
    sasl_username: str | None = Field(None)
    sasl_password: SecretStr | None = Field(None)
    ssl_cafile: Path | None = Field(None)
    ssl_certfile: Path | None = Field(None)
    ssl_keyfile: Path | None = Field(None)
    ssl_check_hostname: bool = Field(True)
    max_batch_size: int = Field(64, ge=1, le=10_000, description="Headlines per micro-batch.")
    max_batch_wait_ms: int = Field(50, ge=0, le=60_000, description="Longest wait to fill a micro-batch.")
    batches_in_flight: int = Field(
        3,
        ge=1,
        le=16,
        description="Micro-batches between fetch and commit: while one is stored and published, the next are "
        "embedded (1 = one batch at a time). Commits stay in order.",
    )
    max_message_bytes: int = Field(65_536, ge=256, description="Larger messages go to the dead-letter topic.")
    compression_type: Literal["lz4", "zstd", "gzip", "snappy", "none"] = Field(
        "lz4",
        description="Codec of the records streamer produces. lz4 costs the broker (which checks every "
        "compressed batch) and the service least CPU; gzip compresses most.",
    )
    request_timeout_ms: int = Field(30_000, ge=1000)
    session_timeout_ms: int = Field(30_000, ge=6000)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    retry_backoff_ms: int = Field(500, ge=10)

    _upper_protocol = field_validator("security_protocol", "sasl_mechanism", mode="before")(upper_case)

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name
                for name, value in (
                    ("sasl_mechanism", self.sasl_mechanism),
                    ("sasl_username", self.sasl_username),
                    ("sasl_password", self.sasl_password),
                )
                if value is None
            ]
            if missing:
                raise ValueError(f"security_protocol {self.security_protocol} needs {', '.join(missing)}")
        return self


