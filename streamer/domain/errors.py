"""Error hierarchy of streamer.

Every error raised on purpose by streamer derives from :class:`StreamerError`.
Retry code reads the class flag ``retriable`` instead of listing types, the way
aiokafka's errors do. Adapters translate client exceptions into these types at
their boundary (``raise StoreError(...) from exc``) so the pipeline never has
to know about pymilvus or aiokafka exception classes.
"""

from __future__ import annotations

__all__ = [
    "StreamerError",
    "ConfigError",
    "InputError",
    "EmbeddingError",
    "StoreError",
    "SchemaMismatchError",
    "BrokerError",
]


class StreamerError(Exception):
    """Root of every error streamer raises on purpose."""

    retriable: bool = False


class ConfigError(StreamerError):
    """A setting has a value streamer cannot work with; the message names it."""


class InputError(StreamerError):
    """An input file or message is malformed; the message names the row/column or field."""


class EmbeddingError(StreamerError):
    """The embedding model could not be loaded or failed to encode a batch."""


class StoreError(StreamerError):
    """Milvus refused or failed an operation."""

    retriable = True


class SchemaMismatchError(StoreError):
    """An existing collection does not match what streamer would create. Never retried."""

    retriable = False


class BrokerError(StreamerError):
    """Kafka refused or failed an operation."""

    retriable = True


