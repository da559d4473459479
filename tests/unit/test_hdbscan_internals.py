"""The private hdbscan functions streamer/clustering.py calls still take what it passes.

``run_hdbscan`` calls ``hdbscan.hdbscan_._tree_to_labels`` with nine positional arguments and
unpacks five results; ``single_linkage_tree`` calls ``hdbscan._hdbscan_linkage.label`` with one
array. Private functions change without notice: hdbscan 0.8.40's ``_tree_to_labels`` has no
``cluster_selection_persistence``, so the same call would put 0.0 into ``max_cluster_size`` and
``max_cluster_size`` into ``cluster_selection_epsilon_max`` without an error. pyproject.toml pins
hdbscan to the releases checked; this test fails on a release whose signatures differ.
"""

from __future__ import annotations

import inspect

import numpy as np
from hdbscan._hdbscan_linkage import label
from hdbscan.hdbscan_ import _tree_to_labels

from streamer.core.clustering import run_hdbscan, single_linkage_tree

# The parameters run_hdbscan fills, in its order (see the comments at its call).
TREE_TO_LABELS_ARGS = [
    "X",  # None
    "single_linkage_tree",
    "min_cluster_size",
    "cluster_selection_method",
    "allow_single_cluster",
    "match_reference_implementation",
    "cluster_selection_epsilon",
    "cluster_selection_persistence",
    "max_cluster_size",
]


def test_tree_to_labels_takes_the_positional_arguments_run_hdbscan_passes() -> None:
    params = list(inspect.signature(_tree_to_labels).parameters.values())
    assert [p.name for p in params[: len(TREE_TO_LABELS_ARGS)]] == TREE_TO_LABELS_ARGS
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params[: len(TREE_TO_LABELS_ARGS)])
    # Whatever follows must have a default: run_hdbscan leaves it out.
    assert all(p.default is not inspect.Parameter.empty for p in params[len(TREE_TO_LABELS_ARGS):])


def test_run_hdbscan_still_calls_it_that_way() -> None:
    """The call in run_hdbscan passes exactly len(TREE_TO_LABELS_ARGS) positional arguments."""
    source = inspect.getsource(run_hdbscan)
    call = source[source.index("_tree_to_labels(") + len("_tree_to_labels(") :]
    body = call[: call.index("\n    )")]
    arguments = [line.split("#")[0].strip().rstrip(",") for line in body.strip().splitlines()]
    assert len([a for a in arguments if a]) == len(TREE_TO_LABELS_ARGS), arguments
    assert "labels, probabilities, persistence, _, _ = _tree_to_labels(" in source


def test_tree_to_labels_returns_five_values() -> None:
    """labels, probabilities, stabilities, condensed tree, single-linkage tree (run_hdbscan unpacks five)."""
    # Two tight pairs joined late: a 4-point single-linkage tree (left, right, distance, size).
    tree = np.array([[0, 1, 0.1, 2], [2, 3, 0.1, 2], [4, 5, 1.0, 4]], dtype=np.float64)
    result = _tree_to_labels(None, tree, 2, "eom", False, False, 0.0, 0.0, 0)
    assert isinstance(result, tuple) and len(result) == 5
    labels, probabilities, _, _, _ = result
    assert len(labels) == 4 and len(probabilities) == 4


def test_label_takes_one_edge_array() -> None:
    """single_linkage_tree passes one (n-1, 3) array of sorted MST edges and gets (n-1, 4) merges."""
    params = list(inspect.signature(label).parameters.values())
    assert len(params) == 1 and params[0].kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert "label(np.ascontiguousarray(edges))" in inspect.getsource(single_linkage_tree)
    edges = np.array([[0, 1, 0.1], [2, 3, 0.1], [1, 2, 1.0]], dtype=np.float64)
    merges = np.asarray(label(edges))
    assert merges.shape == (3, 4) and merges[-1, 3] == 4
