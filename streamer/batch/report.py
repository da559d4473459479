"""Batch report: assignments CSV, clusters.json, a UMAP plot and a text summary.

Consumes plain arrays and summaries, never live clients. The plot is a
self-contained HTML file (plotly.js embedded: reports are opened offline too).
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamer.core.graph import NeighbourTable
from streamer.core.summaries import ClusterSummary
from streamer.domain.headline import NOISE

__all__ = ["write_assignments", "write_clusters", "write_plot", "format_summary", "umap_layout"]

_NOISE_COLOUR = "#c8c8c8"




def write_assignments(
    path: Path, ids: Sequence[str], titles: Sequence[str], labels: np.ndarray, probabilities: np.ndarray
) -> None:
    """``id,cluster,probability,title`` per headline (cluster -1 = noise)."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "cluster", "probability", "title"])
        for hid, title, label, prob in zip(ids, titles, labels, probabilities, strict=True):
            writer.writerow([hid, int(label), f"{float(prob):.4f}", title])


def write_clusters(path: Path, clusters: list[ClusterSummary], extra: dict[str, Any] | None = None) -> None:
    payload = {"clusters": [c.model_dump() for c in clusters], **(extra or {})}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False), encoding="utf-8")


def umap_layout(vectors: np.ndarray, table: NeighbourTable | None, *, seed: int = 42) -> np.ndarray:
    """2-D UMAP coordinates (n, 2). Reuses the kNN table (cosine) so UMAP skips its own search."""
    import umap

    n = len(vectors)
    if n < 4:
        return np.zeros((n, 2))
    n_neighbors = min(15, n - 1)
    kwargs: dict[str, Any] = {}
    if table is not None and table.k + 1 >= n_neighbors and (table.indices[:, : n_neighbors - 1] >= 0).all():
        # UMAP wants each point as its own first neighbour at distance 0.
        own = np.arange(n)[:, None]
        indices = np.hstack([own, table.indices[:, : n_neighbors - 1]])
        dists = np.hstack([np.zeros((n, 1)), 1.0 - table.similarities[:, : n_neighbors - 1]]).astype(np.float32)
        kwargs["precomputed_knn"] = (indices, np.clip(dists, 0.0, 2.0), None)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed, n_jobs=1, **kwargs
    )
    with warnings.catch_warnings():
        # A fixed random_state makes UMAP single-threaded and it warns about it: intended here.
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        return np.asarray(reducer.fit_transform(vectors))


def write_plot(
    path: Path,
    coords: np.ndarray,
    titles: Sequence[str],
    labels: np.ndarray,
    keywords: list[list[str]],
    *,
    title: str = "streamer: headline clusters",
) -> None:
    """Scatter plot, one trace per cluster (noise grey, drawn first), hover shows the headline."""
    import plotly.graph_objects as go

    fig = go.Figure()
    order = [NOISE, *sorted(set(labels.tolist()) - {NOISE})]
    for label in order:
        members = np.flatnonzero(labels == label)
        if members.size == 0:
            continue
        name = "noise" if label == NOISE else f"{label}: {' '.join(keywords[label][:3])}"
        fig.add_trace(
            go.Scattergl(
                x=coords[members, 0],
                y=coords[members, 1],
                mode="markers",
                name=name,
                text=[titles[i] for i in members],
                hovertemplate="%{text}<extra>" + name.replace("<", "&lt;") + "</extra>",
                marker={"size": 5 if label == NOISE else 7, "opacity": 0.5 if label == NOISE else 0.85}
                | ({"color": _NOISE_COLOUR} if label == NOISE else {}),
            )
        )
    fig.update_layout(title=title, template="plotly_white", legend={"itemsizing": "constant"}, height=800)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def format_summary(clusters: list[ClusterSummary], n_items: int, noise: int, *, top: int = 15) -> str:
    """A short plain-text summary for stdout."""
    lines = [
        f"{n_items} headlines -> {len(clusters)} clusters, {noise} noise ({(noise / max(n_items, 1)):.1%})",
    ]
    for c in sorted(clusters, key=lambda c: -c.size)[:top]:
        lines.append(f"  [{c.cluster_id:>4}] {c.size:>5}  {', '.join(c.keywords[:5])}  |  {c.exemplar_title[:90]}")
    if len(clusters) > top:
        lines.append(f"  ... {len(clusters) - top} more in clusters.json")
    return "\n".join(lines)
