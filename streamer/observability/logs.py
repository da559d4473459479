"""Structured logging set-up (structlog, JSON or console).

Secrets never reach a log line: settings hold them as ``SecretStr`` and the
:func:`_redact_secrets` processor masks any key that looks like a credential,
should one ever be passed by mistake.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

__all__ = ["configure_logging", "get_logger"]

_SECRET_MARKERS = ("password", "secret", "token", "sasl_plain", "api_key", "credential")


def _redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "**********"
    return event_dict


def configure_logging(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    """Route stdlib and structlog logging to stderr in one format."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Chatty third-party loggers stay at WARNING unless asked for DEBUG.
    for noisy in ("aiokafka", "kafka", "pymilvus", "urllib3", "numba", "httpx", "filelock", "faiss", "milvus_lite"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # Milvus Lite's in-process gRPC server logs a traceback for every RPC it does not implement
    # (query_iterator asks for AllocTimestamp, then falls back by itself): not an error of ours.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structured logger for ``name``."""
    return structlog.get_logger(name)
