"""Shared benchmark helpers: UCI windows, cached embeddings, peak-RSS measurement in subprocesses.

The benches read the UCI News Aggregator in time order (50,000-row parts
``newsCorpora_noURL.part01.tsv`` ..., docs/benchmarks.md), which is not in the repository: every bench that reads it
takes ``--data DIR`` (:func:`add_data_argument`), the folder that holds ``uci-news-aggregator/``
with those parts (or the parts themselves). The default is ``../shared/data`` beside the checkout.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
# How a bench hands its --data to the interpreters it starts (run_measured, child replays).
DATA_ENV = "BENCH_DATA_DIR"
DATA = Path(os.environ.get(DATA_ENV, DEFAULT_DATA))
UCI_PARTS = "newsCorpora_noURL.part*.tsv"
CACHE = REPO / ".cache" / "bench"


def milvus_server_class() -> Any:
    """``tools/milvus/server.py``'s MilvusServer, loaded by path (the name ``milvus`` is the PyPI server package's)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("streamer_tools_milvus_server", REPO / "tools" / "milvus" / "server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.MilvusServer
sys.path.insert(0, str(REPO))


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """``--data DIR``: where the UCI News Aggregator parts are (call :func:`use_data` with it)."""
    parser.add_argument(
        "--data", type=Path, default=DATA, metavar="DIR",
        help=f"folder holding uci-news-aggregator/{UCI_PARTS} (the UCI News Aggregator in time order, "
             f"split in parts), or holding those parts directly (default: {DEFAULT_DATA})",
    )


def use_data(path: Path) -> None:
    """Read UCI rows from ``path`` (``--data``), here and in every interpreter this bench starts."""
    global DATA
    DATA = Path(path).resolve()
    os.environ[DATA_ENV] = str(DATA)


def _uci_folder(data: Path) -> Path:
    return (data / "uci-news-aggregator" if (data / "uci-news-aggregator").is_dir() else data).resolve()


def uci_parts() -> list[Path]:
    """The UCI part files under ``DATA`` in stream order; exits naming --data when there are none."""
    folder = _uci_folder(DATA)
    parts = sorted(folder.glob(UCI_PARTS))
    if not parts:
        raise SystemExit(f"no UCI News Aggregator parts ({UCI_PARTS}) in {folder}: pass --data DIR")
    return parts


def cache_path(name: str) -> Path:
    """``.cache/bench/<name>.npy`` for embeddings of the default data; another --data gets its own names."""
    folder = _uci_folder(DATA)
    if folder != _uci_folder(DEFAULT_DATA):
        name = f"{name}@{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}"
    return CACHE / f"{name}.npy"


class MirrorOnly:
    """The Milvus side of a MirroredStore, for benches that measure the mirror alone: writes vanish."""

    def upsert(self, headlines: object, vectors: np.ndarray) -> None:
        return None


def uci_rows(start: int, count: int) -> list[dict[str, str]]:
    """Rows ``start .. start+count`` of the time-ordered UCI stream (parts concatenated)."""
    out: list[dict[str, str]] = []
    skipped = 0
    for part in uci_parts():
        with part.open(encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
            for row in reader:
                if skipped < start:
                    skipped += 1
                    continue
                out.append(row)
                if len(out) == count:
                    return out
    return out


def embeddings(name: str, texts: list[str]) -> np.ndarray:
    """Embed with the bundled model, cached under :func:`cache_path` (.cache/bench/<name>.npy)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = cache_path(name)
    if path.exists():
        cached = np.load(path)
        if len(cached) == len(texts):
            return cached
    from streamer.adapters.embedding import FlagEmbedder
    from streamer.config.sections import EmbeddingSettings

    embedder = FlagEmbedder(EmbeddingSettings(threads=2))
    vectors = embedder.encode(texts, progress=True)
    np.save(path, vectors)
    return vectors


def labelled_stream(path: Path, skip: int = 0, count: int | None = None) -> tuple[list[str], list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(ids, titles, labels, event times in ms, vectors) of rows ``skip .. skip+count`` of a labelled file.

    Any file ``streamer cluster`` reads (CSV, TSV, JSONL; column names as streamer.files maps them),
    with a ground-truth label column (STORY, story or label). Vectors come from the bundled model,
    cached under .cache/bench/<file stem>_<skip>_<count>.npy; a cached range of the same file that
    covers the one asked for is sliced instead of embedding again.
    """
    from streamer.adapters.files import read_headlines

    records, _ = read_headlines(Path(path), skip=skip, limit=count)
    if any(r.label is None for r in records):
        raise SystemExit(f"{path}: no label column (STORY, story or label): nothing to score against")
    ids = [r.headline.id for r in records]
    titles = [r.headline.title for r in records]
    labels = np.array([r.label for r in records])
    times = np.array([r.headline.event_time_ms for r in records], dtype=np.int64)
    stem = Path(path).stem
    vectors = None
    for cached in sorted(CACHE.glob(f"{stem}_*_*.npy")):
        try:
            start, size = (int(x) for x in cached.stem[len(stem) + 1 :].split("_"))
        except ValueError:
            continue
        if start <= skip and skip + len(ids) <= start + size:
            vectors = np.load(cached, mmap_mode="r")[skip - start : skip - start + len(ids)].copy()
            break
    if vectors is None:
        vectors = embeddings(f"{stem}_{skip}_{len(ids)}", titles)
    return ids, titles, labels, times, vectors


def uci_window(start: int, count: int) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(ids, titles, stories, vectors) of a UCI window."""
    rows = uci_rows(start, count)
    titles = [r["TITLE"] for r in rows]
    superset = cache_path("uci_0_100000")
    if start + count <= 100_000 and superset.exists():  # windows of the first 100k share one cache
        vectors = np.load(superset, mmap_mode="r")[start : start + count].copy()
    else:
        vectors = embeddings(f"uci_{start}_{count}", titles)
    return [r["ID"] for r in rows], titles, np.array([r["STORY"] for r in rows]), vectors


def run_measured(code: str, timeout_s: float = 3600, memory_cap_gib: float | None = None) -> dict[str, Any]:
    """Run Python ``code`` in a fresh interpreter; returns its last JSON stdout line plus wall time,
    that child's own peak RSS (MiB, from wait4) and the signal if it crashed.

    ``memory_cap_gib`` caps the child's address space, so a runaway method fails with MemoryError
    instead of waking the kernel's OOM killer (which may pick a neighbour).
    """
    import tempfile

    if memory_cap_gib:
        cap = int(memory_cap_gib * 2**30)
        code = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))\n" + code

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=err, cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        deadline = started + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result: dict[str, Any] = {
        "wall_s": round(wall, 2),
        "returncode": proc.returncode,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
    }
    if proc.returncode < 0:
        result["crashed"] = f"signal {-proc.returncode}"
    if proc.returncode == 0 and stdout.strip():
        result.update(json.loads(stdout.strip().splitlines()[-1]))
    elif proc.returncode != 0:
        result["stderr_tail"] = stderr.strip().splitlines()[-3:]
    return result
