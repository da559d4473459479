"""c-TF-IDF keywords, exemplars and the quality scores."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.core.labels import ctfidf_keywords, exemplars
from streamer.core.quality import bcubed, noise_as_singletons, score_clustering
from tests.unit.helpers import unit_rows


def test_keywords_are_distinctive_per_cluster() -> None:
    """Each cluster's top word is its own topic word, not one shared by both."""
    titles = ["Fed raises rates - Reuters", "Fed rates decision - CNN", "Apple iPhone sales rates", "Apple iPhone launch", "x"]
    kw = ctfidf_keywords(titles, np.array([0, 0, 1, 1, -1]), 2, top_n=2)
    assert kw[0][0] == "fed" and kw[1][0] in ("apple", "iphone")
    assert "reuters" not in kw[0] and "cnn" not in kw[0]  # outlet suffixes are not topics


def test_keywords_for_stopword_only_clusters_are_empty() -> None:
    """Clusters whose titles hold only stop words get no keywords instead of an error."""
    assert ctfidf_keywords(["the of", "and the"], np.array([0, 0]), 1) == [[]]


def test_keywords_with_no_clusters() -> None:
    """No clusters -> no keyword lists."""
    assert ctfidf_keywords(["a"], np.array([-1]), 0) == []


def test_exemplar_is_the_most_central_member() -> None:
    """The member closest to the cluster's mean direction is the exemplar."""
    x = unit_rows(np.array([[1, 0.3], [1, 0.0], [1, -0.3], [0, 1]], float))
    assert exemplars(x, np.array([0, 0, 0, -1]), 1).tolist() == [1]


def test_bcubed_perfect_and_all_noise() -> None:
    """Identical partitions score 1; all-noise has precision 1 and recall 1/|class|."""
    truth = np.array([0, 0, 1, 1])
    assert bcubed(truth, truth) == (1.0, 1.0, 1.0)
    p, r, _ = bcubed(truth, noise_as_singletons(np.full(4, -1)))
    assert (p, r) == (1.0, 0.5)


def test_bcubed_one_big_cluster() -> None:
    """Everything in one cluster: recall 1, precision = share of own class."""
    p, r, _ = bcubed(np.array([0, 0, 0, 1]), np.zeros(4, int))
    assert r == 1.0 and p == pytest.approx((3 * 0.75 + 0.25) / 4)


def test_score_counts_noise_and_clusters() -> None:
    """Noise share and cluster count ignore the singleton relabelling."""
    s = score_clustering(np.array([0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, -1]))
    assert s.n_clusters == 2 and s.noise_share == pytest.approx(0.2) and s.bcubed_f1 == 1.0


def test_bcubed_rejects_mismatched_input() -> None:
    """Different lengths are an error."""
    with pytest.raises(ValueError):
        bcubed(np.array([0]), np.array([0, 1]))
