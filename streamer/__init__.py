"""streamer: cluster a live stream of news headlines into stable topics.

Kafka in, embeddings into Milvus, a sparse kNN graph, HDBSCAN, assignment and
cluster lifecycle events out. See README.md for the architecture.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
