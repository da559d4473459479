"""Batch mode: the tutorial's job on a file, at O(N·k) memory.

Numbered steps of :func:`cluster_file`:

1. read and validate the file (``files``);
2. embed the texts (``embedding``), upsert them into Milvus (``store``);
3. top-k neighbours (``neighbours``) and the symmetric, connected distance graph (``graph``);
4. HDBSCAN on the graph (``clustering``);
5. keywords and exemplars per cluster (``labels``); scores when the file has ground truth (``quality``);
6. report files: assignments.csv, clusters.json, plot.html, summary.txt (``report``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamer.batch.neighbours import compute_neighbours
from streamer.batch.report import (
    format_summary,
    umap_layout,
    write_assignments,
    write_clusters,
    write_plot,
)
from streamer.config.sections import ClusteringSettings, GraphSettings
from streamer.core.clustering import Clustering, run_hdbscan
from streamer.core.graph import NeighbourTable, build_distance_graph
from streamer.core.quality import QualityScores, score_clustering
from streamer.core.summaries import ClusterSummary, summarise_clusters
from streamer.domain.headline import FileRecord
from streamer.domain.ports import Embedder, VectorStore
from streamer.observability.logs import get_logger

__all__ = ["BatchResult", "cluster_vectors", "cluster_file"]

log = get_logger(__name__)

_UPSERT_CHUNK = 1000


@dataclass
class BatchResult:
    ids: list[str]
    titles: list[str]
    clustering: Clustering
    table: NeighbourTable
    clusters: list[ClusterSummary]
    timings_s: dict[str, float] = field(default_factory=dict)
    quality: QualityScores | None = None
    graph_method: str = "exact"




def cluster_vectors(
    ids: list[str],
    vectors: np.ndarray,
    graph_settings: GraphSettings,
    clustering_settings: ClusteringSettings,
    store: VectorStore | None = None,
    timings: dict[str, float] | None = None,
) -> tuple[NeighbourTable, Clustering, str]:
    """Steps 3-4: neighbours, graph, HDBSCAN. Returns (table, clustering, graph method)."""
    timings = timings if timings is not None else {}
    started = time.perf_counter()
    table, method = compute_neighbours(graph_settings, ids, vectors, store)
    graph = build_distance_graph(table)
    timings["graph_s"] = time.perf_counter() - started
    started = time.perf_counter()
    clustering = run_hdbscan(graph, clustering_settings.hdbscan_params())
    timings["hdbscan_s"] = time.perf_counter() - started
    return table, clustering, method


def cluster_file(
    records: list[FileRecord],
    embedder: Embedder,
    store: VectorStore,
    graph_settings: GraphSettings,
    clustering_settings: ClusteringSettings,
    out_dir: Path,
    *,
    plot: bool = True,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> BatchResult:
    """Run the numbered steps on already-read ``records`` and write the report into ``out_dir``."""
    step = on_step or (lambda message: log.info(message))
    timings: dict[str, float] = {}
    headlines = [r.headline for r in records]
    ids = [h.id for h in headlines]
    titles = [h.title for h in headlines]

    step(f"embedding {len(headlines)} headlines with {embedder.name}")
    started = time.perf_counter()
    vectors = embedder.encode([h.text for h in headlines], progress=progress)
    timings["embed_s"] = time.perf_counter() - started

    step("upserting into Milvus")
    started = time.perf_counter()
    for start in range(0, len(headlines), _UPSERT_CHUNK):
        store.upsert(headlines[start : start + _UPSERT_CHUNK], vectors[start : start + _UPSERT_CHUNK])
    timings["upsert_s"] = time.perf_counter() - started

    step("building the kNN graph and running HDBSCAN")
    table, clustering, method = cluster_vectors(ids, vectors, graph_settings, clustering_settings, store, timings)
    clusters = summarise_clusters(ids, titles, vectors, clustering, clustering_settings.keywords)

    quality = None
    truth = [r.label for r in records]
    if all(label is not None for label in truth):
        quality = score_clustering(np.asarray(truth), clustering.labels)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_assignments(out_dir / "assignments.csv", ids, titles, clustering.labels, clustering.probabilities)
    extra: dict[str, Any] = {
        "n_items": len(ids),
        "noise_share": round(clustering.noise_share, 4),
        "graph_method": method,
        "parameters": {"graph": graph_settings.model_dump(), "clustering": clustering_settings.model_dump()},
    }
    if quality is not None:
        extra["quality"] = quality.as_dict()
        (out_dir / "quality.json").write_text(json.dumps(quality.as_dict(), indent=2))
    write_clusters(out_dir / "clusters.json", clusters, extra)
    if plot:
        step("laying out the UMAP plot")
        started = time.perf_counter()
        coords = umap_layout(vectors, table)
        write_plot(out_dir / "plot.html", coords, titles, clustering.labels, [c.keywords for c in clusters])
        timings["umap_s"] = time.perf_counter() - started
    summary = format_summary(clusters, len(ids), int((clustering.labels < 0).sum()))
    if quality is not None:
        q = quality
        summary += (
            f"\nquality vs ground truth: B-cubed P={q.bcubed_precision:.3f} R={q.bcubed_recall:.3f} "
            f"F1={q.bcubed_f1:.3f}  ARI={q.ari:.3f}  AMI={q.ami:.3f}"
        )
    (out_dir / "summary.txt").write_text(summary + "\n", encoding="utf-8")
    return BatchResult(ids, titles, clustering, table, clusters, timings, quality, method)
