"""`streamer cluster FILE`: the tutorial's job end to end (real model, Milvus Lite), and its error paths."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters.files import read_headlines
from streamer.adapters.milvus.store import MilvusStore
from streamer.batch.cluster import cluster_vectors
from streamer.config.connections import MilvusSettings
from streamer.config.sections import ClusteringSettings, GraphSettings
from tests.conftest import REPO
from tests.sample_data import UCI_SAMPLE, write_tutorial_csv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, text=True, cwd=cwd, timeout=500)


def test_cluster_tutorial_file_writes_the_report(tmp_path: Path) -> None:
    """A CSV in the tutorial's layout (guid, title, description, venue, url, published_at, updated_at;
    870 rows, like the tutorial's file) -> assignments, clusters.json, plot.html and a summary; one
    row per headline."""
    tutorial = tmp_path / "tutorial-layout.csv"
    rows = write_tutorial_csv(tutorial, 870)
    out = tmp_path / "report"
    result = _cli("cluster", str(tutorial), "--out", str(out), "--uri", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "clusters" in result.stdout and "report:" in result.stdout
    assignments = (out / "assignments.csv").read_text().splitlines()
    assert assignments[0] == "id,cluster,probability,title" and len(assignments) == 871
    assert {line.split(",")[0] for line in assignments[1:]} == {r["guid"] for r in rows}  # guid is the id
    clusters = json.loads((out / "clusters.json").read_text())
    assert clusters["n_items"] == 870 and len(clusters["clusters"]) >= 10
    first = clusters["clusters"][0]
    assert first["keywords"] and first["exemplar_title"] and first["size"] >= 2
    html = (out / "plot.html").read_text()
    assert rows[1]["title"].startswith("Fed's Charles Plosser")
    assert "plotly" in html and "noise" in html and "Plosser" in html  # hover text holds the headlines


def test_uci_file_reports_quality(tmp_path: Path) -> None:
    """A file with STORY ids gets B-cubed/ARI/AMI scores next to the report."""
    result = _cli("cluster", "examples/uci-news-sample.tsv", "--limit", "600", "--no-plot", "--out", str(tmp_path), "--uri", str(tmp_path / "m.db"))
    assert result.returncode == 0, result.stderr[-2000:]
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert 0 < quality["bcubed_f1"] <= 1 and quality["n_items"] == 600


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"id,body\n1,x\n", "no title column"),
        (b"id,title\n1,ok\n2,\n", "row 3: column 'title'"),
        (b"id,title\n1,caf\xe9\n", "not valid UTF-8"),
        (b"id,title\n1," + b"x" * 1_000_000 + b"\n", "row 2: column 'title'"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    """Bad files exit 2 with one message naming row/column, and no traceback."""
    bad = tmp_path / "bad.csv"
    bad.write_bytes(content)
    result = _cli("cluster", str(bad), "--out", str(tmp_path / "o"), "--uri", str(tmp_path / "m.db"))
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bad_setting_names_it(tmp_path: Path) -> None:
    """A wrong value exits 2 naming the setting and the allowed values."""
    result = _cli("cluster", str(UCI_SAMPLE), "--set", "clustering.selection_method=best")
    assert result.returncode == 2
    assert "clustering.selection_method" in result.stderr and "'eom'" in result.stderr


def test_milvus_search_strategy_agrees_with_exact(tmp_path: Path, embedder) -> None:
    """Graph from Milvus search (FLAT) == graph from vectors read back: same labels."""
    records, _ = read_headlines(UCI_SAMPLE, limit=300)
    heads = [r.headline for r in records]
    vectors = embedder.encode([h.text for h in heads])
    ids = [h.id for h in heads]
    clustering = ClusteringSettings(min_cluster_size=5, min_samples=2)
    with MilvusStore(MilvusSettings(uri=str(tmp_path / "m.db")), embedder.dim) as store:
        store.upsert(heads, vectors)
        back_ids, back_vectors, _ = store.fetch_all(fields=())
        order = [back_ids.index(i) for i in ids]
        _, exact, _ = cluster_vectors(ids, back_vectors[order], GraphSettings(k=10, method="exact"), clustering)
        _, via_milvus, method = cluster_vectors(ids, vectors, GraphSettings(k=10, method="milvus"), clustering, store)
    assert method == "milvus"
    assert np.array_equal(exact.labels, via_milvus.labels)
