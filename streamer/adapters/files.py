"""Read headline files (CSV, TSV, JSONL) into validated :class:`~streamer.domain.headline.Headline` records.

Column names are mappable; the defaults read the Milvus tutorial's
``news_data_dedup.csv`` (guid, title, description, venue, published_at) and the
UCI News Aggregator TSV (ID, TITLE, PUBLISHER, TIMESTAMP, STORY) as they are.
TSV is read without quoting (UCI titles contain bare ``"``).

Every problem is reported as an :class:`~streamer.domain.errors.InputError` naming the
file, the row (1-based, header = row 1) and the column.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from streamer.domain.errors import InputError
from streamer.domain.headline import FileRecord, HeadlineIn, now_ms

__all__ = ["ColumnMap", "read_headlines", "detect_format"]

_MAX_REPORTED_ERRORS = 10
csv.field_size_limit(16 * 1024 * 1024)  # a 1 MB title must reach validation to get a clear error


@dataclass(frozen=True)
class ColumnMap:
    """Which file column feeds which headline field; each entry lists accepted names, first match wins."""

    id: tuple[str, ...] = ("id", "guid", "ID")
    title: tuple[str, ...] = ("title", "TITLE", "headline")
    description: tuple[str, ...] = ("description", "DESCRIPTION", "summary")
    published_at: tuple[str, ...] = ("published_at", "TIMESTAMP", "timestamp", "date")
    source: tuple[str, ...] = ("venue", "source", "PUBLISHER", "publisher")
    url: tuple[str, ...] = ("url", "URL")
    label: tuple[str, ...] = ("STORY", "story", "label")

    @classmethod
    def with_overrides(cls, **names: str | None) -> ColumnMap:
        """Defaults with some fields pinned to one column name (CLI ``--title-column`` etc.)."""
        return cls(**{key: (value,) for key, value in names.items() if value})




@dataclass
class _Resolved:
    columns: dict[str, str] = field(default_factory=dict)


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "csv"
    raise InputError(f"{path}: unknown file type {suffix!r}: use .csv, .tsv or .jsonl")


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: row {line}: not valid UTF-8 (byte offset {exc.start})") from None


def _resolve_columns(path: Path, header: list[str], columns: ColumnMap) -> dict[str, str]:
    present = set(header)
    chosen: dict[str, str] = {}
    for fieldname, candidates in vars(columns).items():
        match = next((c for c in candidates if c in present), None)
        if match is not None:
            chosen[fieldname] = match
    if "title" not in chosen:
        raise InputError(
            f"{path}: no title column: looked for {list(columns.title)}, the header has {header}; "
            "name it with --title-column"
        )
    return chosen


def _rows(path: Path, fmt: str, text: str) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "jsonl":
        for number, line in enumerate(io.StringIO(text), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: row {number}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{path}: row {number}: expected a JSON object, got {type(obj).__name__}")
            yield number, obj
        return
    dialect: dict[str, Any] = (
        {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if fmt == "tsv" else {"delimiter": ",", "quotechar": '"'}
    )
    reader = csv.reader(io.StringIO(text, newline=""), **dialect)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise InputError(f"{path}: row 1: {exc}") from None
    width = len(header)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"{path}: row {reader.line_num}: {exc}") from None
        if not values:
            continue
        if len(values) != width:
            raise InputError(f"{path}: row {reader.line_num}: {len(values)} fields, the header has {width}")
        yield reader.line_num, dict(zip(header, values, strict=True))


def _field_error(path: Path, row: int, exc: ValidationError, columns: dict[str, str]) -> str:
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "?"
        column = columns.get(name, name)
        problems.append(f"column {column!r}: {err['msg']}")
    return f"{path}: row {row}: " + "; ".join(problems)


def read_headlines(
    path: Path,
    *,
    columns: ColumnMap | None = None,
    skip: int = 0,
    limit: int | None = None,
    skip_invalid: bool = False,
) -> tuple[list[FileRecord], list[str]]:
    """Read, validate and de-duplicate (by id, first wins) the headlines of ``path``.

    Parameters
    ----------
    skip, limit:
        Window of data rows to read (after the header), e.g. a 10k window of a stream.
    skip_invalid:
        Drop invalid rows and return their messages instead of raising.

    Returns
    -------
    records, problems:
        Valid records in file order, and the messages for rows that were dropped
        (invalid when ``skip_invalid``, or duplicate ids).

    Raises
    ------
    InputError
        Empty file, missing title column, bad encoding, malformed rows or (unless
        ``skip_invalid``) invalid values; the message names row and column.
    """
    path = Path(path)
    fmt = detect_format(path)
    text = _decode(path)
    if not text.strip():
        raise InputError(f"{path}: the file is empty")
    columns = columns or ColumnMap()
    records: list[FileRecord] = []
    problems: list[str] = []
    errors: list[str] = []
    seen: set[str] = set()
    resolved: dict[str, str] | None = None
    data_rows = 0
    ingested_at = now_ms()
    for row_number, row in _rows(path, fmt, text):
        if resolved is None:
            resolved = _resolve_columns(path, list(row), columns)
        data_rows += 1
        if data_rows <= skip:
            continue
        if limit is not None and len(records) + len(errors) >= limit:
            break
        payload = {f: row.get(col) for f, col in resolved.items() if f != "label"}
        try:
            headline = HeadlineIn.model_validate(payload).to_headline(ingested_at_ms=ingested_at)
        except ValidationError as exc:
            errors.append(_field_error(path, row_number, exc, resolved))
            if not skip_invalid and len(errors) >= _MAX_REPORTED_ERRORS:
                break
            continue
        if headline.id in seen:
            problems.append(f"{path}: row {row_number}: duplicate id {headline.id!r} (first kept)")
            continue
        seen.add(headline.id)
        label_col = resolved.get("label")
        records.append(FileRecord(headline, str(row[label_col]) if label_col else None, row_number))
    if resolved is None:
        raise InputError(f"{path}: no data rows")
    if errors and not skip_invalid:
        more = " (and possibly more)" if len(errors) >= _MAX_REPORTED_ERRORS else ""
        raise InputError(f"{len(errors)} invalid rows{more}:\n  " + "\n  ".join(errors))
    if not records:
        raise InputError(f"{path}: no valid headlines" + (f"; first problem: {errors[0]}" if errors else ""))
    return records, errors + problems
