"""The embedding adapter with the real bundled model, and the BGE-M3 code path on a tiny random model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from streamer.adapters.embedding import FlagEmbedder, resolve_model
from streamer.config.sections import EmbeddingSettings
from streamer.domain.errors import EmbeddingError

pytestmark = pytest.mark.integration


def test_bundled_model_gives_unit_vectors_that_mean_something(embedder: FlagEmbedder) -> None:
    """384-d unit vectors; two headlines about one event are closer than an unrelated one."""
    v = embedder.encode(
        [
            "Fed official says weak data caused by weather, should not slow taper",
            "Fed's Plosser sees high bar for change in pace of tapering",
            "Elephants can tell human languages apart, study finds",
        ]
    )
    assert v.shape == (3, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


def test_fast_path_equals_flagembedding_encode(embedder: FlagEmbedder) -> None:
    """The adapter's batch path returns FlagModel.encode's vectors (same tokenizer, model, pooling)."""
    texts = [f"Headline number {i} about markets and rates" for i in range(40)] + ["short", "a much longer headline " * 10]
    ours = embedder.encode(texts)
    theirs = embedder._model.encode(texts, batch_size=64)  # the library's own path, as reference
    assert np.allclose(ours, theirs, atol=1e-5)


def test_batches_embedded_at_once_match_one_at_a_time(embedder: FlagEmbedder) -> None:
    """The service embeds two batches at once (kafka.batches_in_flight): same vectors as serially,
    and no tokenizer refusing a second caller."""
    texts = [f"Markets {i}: stocks {'rise' if i % 2 else 'fall'} as rates move, headline {i}" * (1 + i % 3) for i in range(96)]
    batches = [texts[i : i + 24] for i in range(0, len(texts), 24)]
    serial = [embedder.encode(b) for b in batches]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(embedder.encode, batches * 3))
    for i, vectors in enumerate(together):
        assert np.allclose(vectors, serial[i % len(batches)], atol=1e-5)


def test_empty_batch(embedder: FlagEmbedder) -> None:
    """No texts -> a (0, dim) array, no model call."""
    assert embedder.encode([]).shape == (0, 384)


def test_unknown_model_offline_is_a_clear_error() -> None:
    """A hub name with the hub switched off names the setting and the way out."""
    with pytest.raises(EmbeddingError, match="STREAMER_EMBEDDING__MODEL"):
        FlagEmbedder(EmbeddingSettings(model="no-such-org/no-such-model"))


@pytest.fixture(scope="module")
def tiny_m3(tmp_path_factory: pytest.TempPathFactory, embedder: FlagEmbedder) -> Path:
    """A randomly initialised 2-layer XLM-RoBERTa with M3's heads, saved like a local BGE-M3 copy."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    folder = tmp_path_factory.mktemp("tiny-bge-m3")
    tokenizer = embedder._model.tokenizer  # any tokenizer saved with the weights works for the loader
    tokenizer.save_pretrained(folder)
    config = XLMRobertaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=160, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    XLMRobertaModel(config).save_pretrained(folder)
    torch.save(torch.nn.Linear(32, 32).state_dict(), folder / "colbert_linear.pt")
    torch.save(torch.nn.Linear(32, 1).state_dict(), folder / "sparse_linear.pt")
    return folder


def test_bge_m3_folder_is_detected(tiny_m3: Path) -> None:
    """A folder with M3's colbert/sparse heads resolves to the BGEM3FlagModel path with CLS pooling."""
    resolved = resolve_model(EmbeddingSettings(model=str(tiny_m3)))
    assert (resolved.kind, resolved.pooling) == ("bge-m3", "cls")


def test_bge_m3_code_path_encodes(tiny_m3: Path) -> None:
    """BGEM3FlagModel loads the folder and its dense vectors come back normalised, hidden-size wide."""
    m3 = FlagEmbedder(EmbeddingSettings(model=str(tiny_m3), max_length=64))
    v = m3.encode(["one headline", "another headline", "a third"])
    assert m3.kind == "bge-m3" and v.shape == (3, 32)
    # Two callers at once (batches in flight) get what one caller gets.
    with ThreadPoolExecutor(2) as pool:
        again = list(pool.map(m3.encode, [["one headline", "another headline", "a third"]] * 4))
    assert all(np.allclose(a, v, atol=1e-5) for a in again)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(v[0], v[1])
