"""Turn a raw Kafka record into a :class:`~streamer.domain.headline.Headline` or a reason to dead-letter it.

The reason code is one of a small fixed set (it labels a metric); the message
says exactly what was wrong, for the ``dlq_reason`` header. Pure; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum

from pydantic import ValidationError

from streamer.domain.headline import Headline, HeadlineIn, RawRecord

__all__ = ["RejectReason", "Rejection", "parse_record"]


class RejectReason(StrEnum):
    EMPTY = "empty"
    OVERSIZED = "oversized"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    INVALID_FIELDS = "invalid_fields"
    #: Valid, but the model failed on it when embedded alone (a poison message).
    EMBEDDING_FAILED = "embedding_failed"


@dataclass(frozen=True)
class Rejection:
    reason: RejectReason
    message: str


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "message"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_record(record: RawRecord, *, max_bytes: int, ingested_at_ms: int) -> Headline | Rejection:
    """Validate one message. Never raises for bad input: returns a :class:`Rejection` instead."""
    raw = record.value
    if not raw:
        return Rejection(RejectReason.EMPTY, "message has no value")
    if len(raw) > max_bytes:
        return Rejection(RejectReason.OVERSIZED, f"message is {len(raw)} bytes, the limit is {max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(RejectReason.INVALID_UTF8, f"not valid UTF-8 at byte {exc.start}")
    try:
        payload = json.loads(text)
    except (ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, or an int past 4300 digits
        if isinstance(exc, json.JSONDecodeError):
            detail = exc.msg
        else:
            detail = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        return Rejection(RejectReason.INVALID_JSON, f"invalid JSON: {detail}")
    if not isinstance(payload, dict):
        return Rejection(RejectReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(payload).__name__}")
    try:
        headline = HeadlineIn.model_validate(payload).to_headline(ingested_at_ms=ingested_at_ms)
    except ValidationError as exc:
        return Rejection(RejectReason.INVALID_FIELDS, _describe(exc))
    except ValueError as exc:  # raised by pydantic-core itself, e.g. for a lone surrogate (\ud83d) in a string
        return Rejection(RejectReason.INVALID_FIELDS, f"invalid field value: {exc}"[:300])
    # A lone surrogate escape can also pass validation (the id); it cannot be encoded for Kafka or Milvus.
    for name in ("id", "title", "description", "source", "url", "language"):
        value = getattr(headline, name)
        if value is not None and not _encodable(value):
            return Rejection(RejectReason.INVALID_FIELDS, f"{name}: not valid Unicode (a lone surrogate escape)")
    return headline


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
