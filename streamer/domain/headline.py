"""A headline, from the bytes of a message or a file row to the validated form the core uses.

- :class:`HeadlineIn` validates one input message (Kafka JSON or a file row);
- :class:`Headline` is the validated, immutable form the rest of streamer works with;
- :class:`RawRecord` is one consumed message as bytes; :class:`FileRecord` a file row with its
  ground-truth label, if any (scoring only).

No I/O here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    field_validator,
)

__all__ = [
    "NOISE",
    "MAX_TITLE_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "HeadlineIn",
    "Headline",
    "RawRecord",
    "content_id",
    "to_epoch_ms",
    "now_ms",
]

NOISE = -1
#: What downstream holds for a headline published as "unassigned" (before the first run), or never published.
UNASSIGNED = -2
MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 1000
MAX_DESCRIPTION_CHARS = 10_000

# Timestamps outside this range are certainly wrong (year 1970 .. 2200) and are refused.
_MIN_EPOCH_MS = 0
_MAX_EPOCH_MS = 7_258_118_400_000


def now_ms() -> int:
    """Current wall-clock time in epoch milliseconds."""
    return int(datetime.now(UTC).timestamp() * 1000)


def to_epoch_ms(value: Any) -> int | None:
    """Parse a timestamp: epoch s/ms (int, float or digits), ISO-8601, or 'YYYY-MM-DD HH:MM:SS+00'.

    >>> to_epoch_ms("2024-04-25 18:24:04+00")
    1714069444000
    >>> to_epoch_ms(1394470370698)
    1394470370698
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean is not a timestamp")
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=UTC)
        ms = int(dt.timestamp() * 1000)
    elif isinstance(value, int | float) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        # Seconds and milliseconds are told apart by magnitude (1e11 s is the year 5138).
        try:
            number = float(value)
            ms = int(number * 1000) if abs(number) < 1e11 else int(number)
        except OverflowError:  # Infinity, 1e400, a 400-digit integer: pydantic only catches ValueError
            raise ValueError(f"timestamp {str(value)[:40]!r} is outside 1970..2200") from None
    elif isinstance(value, str):
        text = value.strip().replace("Z", "+00:00")
        if len(text) >= 3 and text[-3] in "+-" and text[-2:].isdigit() and ":" not in text[-6:]:
            text += ":00"  # '...+00' -> '...+00:00'
        dt = datetime.fromisoformat(text)
        ms = int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp() * 1000)
    else:
        raise ValueError(f"cannot read a timestamp from {type(value).__name__}")
    if not _MIN_EPOCH_MS <= ms <= _MAX_EPOCH_MS:
        raise ValueError(f"timestamp {value!r} is outside 1970..2200")
    return ms


def content_id(title: str, description: str | None) -> str:
    """Stable id for a headline that came without one: a hash of its content."""
    digest = hashlib.sha256(f"{title}\n{description or ''}".encode()).hexdigest()
    return f"sha256:{digest[:32]}"


def _strip(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _empty_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


_Title = Annotated[str, BeforeValidator(_strip), StringConstraints(min_length=1, max_length=MAX_TITLE_CHARS)]


def _optional_text(max_chars: int) -> Any:
    """An optional string of at most ``max_chars``; blank strings become None."""
    return Annotated[
        Annotated[str, StringConstraints(max_length=max_chars)] | None, BeforeValidator(_empty_to_none)
    ]


class HeadlineIn(BaseModel):
    """One incoming headline message. Unknown fields are ignored; types are strict.

    ``published_at`` accepts epoch seconds or milliseconds, or an ISO-8601 string.
    """

    model_config = ConfigDict(extra="ignore", strict=False, frozen=True)

    id: Annotated[str, BeforeValidator(_strip), StringConstraints(min_length=1, max_length=MAX_ID_CHARS)] | None = (
        None
    )
    title: _Title
    description: _optional_text(MAX_DESCRIPTION_CHARS) = None
    published_at: int | None = None
    source: _optional_text(512) = None
    url: _optional_text(4096) = None
    language: _optional_text(32) = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_is_text(cls, value: Any) -> Any:
        # Numeric ids (CSV ID columns) are accepted and kept as text; other types are refused.
        if isinstance(value, bool) or not isinstance(value, str | int | None):
            raise ValueError("id must be a string or an integer")
        return str(value) if isinstance(value, int) else value

    @field_validator("title", "description", "source", "url", "language", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"must be a string, not {type(value).__name__}")
        if isinstance(value, str) and ("\x00" in value or "\ufffd" in value):
            raise ValueError("contains NUL or undecodable bytes")
        return value

    @field_validator("published_at", mode="before")
    @classmethod
    def _parse_time(cls, value: Any) -> int | None:
        return to_epoch_ms(value)

    def to_headline(self, *, ingested_at_ms: int | None = None) -> Headline:
        """The validated headline, with a content hash as id when the message had none."""
        return Headline(
            id=self.id or content_id(self.title, self.description),
            title=self.title,
            description=self.description,
            published_at_ms=self.published_at,
            source=self.source,
            url=self.url,
            language=self.language,
            ingested_at_ms=ingested_at_ms if ingested_at_ms is not None else now_ms(),
        )


@dataclass(frozen=True, slots=True)
class Headline:
    """A validated headline. ``text`` is what gets embedded: title, then description."""

    id: str
    title: str
    description: str | None = None
    published_at_ms: int | None = None
    source: str | None = None
    url: str | None = None
    language: str | None = None
    ingested_at_ms: int = field(default_factory=now_ms)

    @property
    def text(self) -> str:
        return f"{self.title}\n{self.description}" if self.description else self.title

    @property
    def event_time_ms(self) -> int:
        """Time used by the window: published_at when known, else arrival time."""
        return self.published_at_ms if self.published_at_ms is not None else self.ingested_at_ms




















@dataclass(frozen=True, slots=True)
class RawRecord:
    """One consumed message, as bytes: the pipeline validates it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True)
class FileRecord:
    """A headline read from a file, with its ground-truth label when the file has one."""

    headline: Headline
    label: str | None = None
    row: int = 0


