"""What each ``streamer run --role`` starts, as data, and the service configs built from settings.

A role is a set of parts; :func:`streamer.app.run.run_service` starts exactly the parts of its
role, so "which role does what" is answered here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from streamer.config.settings import Settings
from streamer.core.arrivals import EmergingRule
from streamer.core.window import ReclusterConfig
from streamer.domain.errors import ConfigError
from streamer.service.ingest import IngestConfig

__all__ = ["ROLES", "Role", "RoleParts", "check_streaming_settings", "ingest_config", "recluster_config"]

Role = Literal["all", "ingest", "recluster"]


@dataclass(frozen=True)
class RoleParts:
    """The parts one service process runs."""

    #: Consume the input topic: validate, embed, store, assign, publish, commit.
    ingest: bool
    #: Stand for the re-clusterer's leadership (a Kafka group) and run it while leading.
    recluster: bool

    @property
    def follows_snapshots(self) -> bool:
        """Ingest takes the leader's snapshots from the state topic (its own, when it leads, are swapped in directly)."""
        return self.ingest

    @property
    def colocated(self) -> bool:
        """Ingest and the re-clusterer share a process: arrivals go straight to the window, and
        emerging topics can be started between runs (only the leader holds the id counter)."""
        return self.ingest and self.recluster


ROLES: dict[Role, RoleParts] = {
    "all": RoleParts(ingest=True, recluster=True),
    "ingest": RoleParts(ingest=True, recluster=False),
    "recluster": RoleParts(ingest=False, recluster=True),
}


def check_streaming_settings(settings: Settings) -> None:
    """Refuse settings the service cannot honour, naming the setting (batch mode accepts them)."""
    if settings.graph.method == "milvus":
        raise ConfigError(
            "graph.method (STREAMER_GRAPH__METHOD) = 'milvus' is for batch mode only: the re-clusterer keeps its "
            "window's vectors and maintains the graph itself; use 'auto', 'exact', 'ivf' or 'hnsw'"
        )


def recluster_config(settings: Settings) -> ReclusterConfig:
    t = settings.tracking
    return ReclusterConfig(
        k=settings.graph.k,
        graph_method=settings.graph.method,
        approx_threshold=settings.graph.approx_threshold,
        params=settings.clustering.hdbscan_params(),
        min_points=settings.clustering.min_points,
        keywords=settings.clustering.keywords,
        window_s=t.window_s,
        max_window_size=t.max_window_size,
        interval_s=t.recluster_interval_s,
        every_n=t.recluster_every_n,
        every_unplaced=t.recluster_noise_n,
        delete_expired=t.delete_expired_from_store,
        drift_share=t.drift_rebuild_share,
        state_topic=t.state_topic,
        settle_s=t.settle_s,
        # Milvus Lite is one process per database file: nobody else writes to it, so after the
        # first read (rows from before a restart) there is nothing to catch up on.
        catch_up_every_run=settings.milvus.is_server,
    )


def ingest_config(settings: Settings) -> IngestConfig:
    k = settings.kafka
    return IngestConfig(
        max_batch_size=k.max_batch_size,
        max_batch_wait_ms=k.max_batch_wait_ms,
        batches_in_flight=k.batches_in_flight,
        max_message_bytes=k.max_message_bytes,
        k=settings.graph.k,
        retry_initial_s=k.retry_backoff_ms / 1000,
        emerging=EmergingRule(
            attach_similarity=settings.clustering.attach_similarity,
            emerging_similarity=settings.tracking.emerging_similarity,
            emerging_min_size=settings.tracking.emerging_min_size,
        ),
        state_topic=settings.tracking.state_topic,
        write_behind=settings.milvus.lite_write_behind,
        max_unstored=settings.milvus.lite_write_behind_rows,
    )
