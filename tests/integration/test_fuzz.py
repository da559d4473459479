"""Fuzzed input against one running ``streamer run`` (real Kafka, Milvus Lite, real model).

Hypothesis draws whole lists of messages: random bytes, invalid UTF-8, JSON of the wrong
type, missing, wrong-typed or huge fields, odd Unicode (RTL, combining marks, emoji, NUL,
lone surrogate escapes), duplicate ids, timestamps far in the past or future, deep nesting,
numbers past Python's digit limit, mixed with valid headlines. Each list goes to the same
service; then:

- the service is alive and ready (no poison message stops it);
- every message :func:`streamer.domain.validation.parse_record` rejects is on the dead-letter
  topic with its original key and bytes, the reason code and a reason text;
- every valid message's headline id has an arrival event (duplicate ids: the id has events);
- dead-lettered + valid == sent, and nothing else showed up.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streamer.domain.events import AssignmentEvent
from streamer.domain.headline import Headline, RawRecord
from streamer.domain.validation import Rejection, parse_record
from tests.integration.test_faults import (
    PARTITIONS,
    all_committed,
    fault_settings,
    offsets,
    patient,
    produce,
    report,
    uci_headlines,
)
from tests.plugins.streamer_fixtures import ServiceProcess, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MAX_BYTES = 65_536
TITLES = [h["title"] for h in uci_headlines(200, skip=1_000)]
ODD_TEXT = [
    "مرحبا بالعالم: أخبار الأسواق",  # Arabic (RTL)
    "שלום עולם: חדשות הבורסה",  # Hebrew (RTL)
    "\u202eevil override\u202c and back",  # RTL override
    "Ze\u0301\u0302\u0303\u0304 combining marks Z\u0351\u0334\u0353a\u0300lgo",
    "🔥🚀 markets rally 👩‍👩‍👧‍👦 🇺🇸",
    "zero\u200bwidth\u200djoiner\u2060",
    "\ufeffBOM at the start",
    "NUL\x00inside",
    "replacement \ufffd char",
    "tab\tnew\nline\r",
    "   padded   ",
    "",
    "    ",
    "\U0010fffd plane 16 private use",
    "ｆｕｌｌｗｉｄｔｈ ａｓｃｉｉ",
]
FAR_TIMES: list[Any] = [
    0, 1, -1, -62135596800000, 253402300800000, 10**15, 10**20, -(10**20), 10**400, 1e308, float("inf"),
    float("-inf"), float("nan"), "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "1969-12-31T23:59:59Z",
    "2199-12-31T00:00:00+00", "2014-03-10 16:52:50+00", "yesterday", "", "1394470370698", "-5", True, [], {},
]


def _text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(TITLES),
        st.sampled_from(ODD_TEXT),
        st.text(max_size=40),
        st.text(alphabet=st.characters(categories=["Mn", "Me", "Cf", "So", "Zs", "Lo"]), min_size=1, max_size=30),
        st.text(alphabet=st.characters(categories=["Cs", "Ll"]), min_size=1, max_size=6),  # lone surrogates
        st.integers(990, 1100).map(lambda n: "y" * n),  # around the 1000-character title limit
    )


def _junk() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(-(10**30), 10**30), st.floats(), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
        st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    )


_ids = st.one_of(
    st.sampled_from(["dup-1", "dup-2", "dup-3"]),  # the same id more than once
    st.integers(0, 10**6).map(lambda i: f"fz-{i}"),
    st.integers(-5, 5),
    _text(),
    st.integers(500, 600).map(lambda n: "i" * n),  # around the 512-character id limit
    _junk(),
)
_objects = st.fixed_dictionaries(
    {},
    optional={
        "id": _ids,
        "title": st.one_of(_text(), _text(), _junk()),
        "description": st.one_of(_text(), _junk(), st.integers(9_990, 10_010).map(lambda n: "d" * n)),
        "published_at": st.one_of(st.sampled_from(FAR_TIMES), st.integers(0, 7_258_118_400_000), _junk()),
        "source": st.one_of(_text(), _junk()),
        "url": st.one_of(st.just("https://example.com/a?b=c"), _text(), _junk()),
        "language": st.one_of(st.sampled_from(["en", "ar", "he", "x" * 40]), _junk()),
        "extra": st.one_of(_text(), _junk()),
    },
)


@st.composite
def _encoded_object(draw: st.DrawFn) -> bytes:
    obj = draw(_objects)
    if draw(st.booleans()):
        return json.dumps(obj).encode()  # surrogates and NaN survive as \ud83d / NaN escapes
    # Raw UTF-8; a lone surrogate becomes invalid UTF-8 bytes here.
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def _valid(draw: st.DrawFn) -> bytes:
    message = {"id": f"ok-{draw(st.integers(0, 10**9))}", "title": draw(st.sampled_from(TITLES))}
    if draw(st.booleans()):
        message["published_at"] = draw(st.integers(1_300_000_000_000, 1_800_000_000_000))
    if draw(st.booleans()):
        message["description"] = draw(st.sampled_from(ODD_TEXT[:7]))
    return json.dumps(message, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def _broken_utf8(draw: st.DrawFn) -> bytes:
    good = draw(_valid())
    at = draw(st.integers(0, len(good)))
    bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xc0\xaf"]))
    return good[:at] + bad + good[at:]


_messages = st.one_of(
    _valid(),
    _valid(),
    _encoded_object(),
    _encoded_object(),
    st.binary(max_size=200),
    _broken_utf8(),
    st.one_of(st.integers(), st.floats(), st.text(max_size=20), st.lists(st.integers(), max_size=3), st.booleans(),
              st.none()).map(lambda v: json.dumps(v).encode()),
    st.sampled_from([
        b"",
        b"{}",
        b'{"title": "x", "published_at": ' + b"1" * 5000 + b"}",  # past Python's int digit limit
        b'{"title": "lone \\ud83d surrogate"}',
        b'{"title": "ok", "id": "\\udc00"}',
        b"[" * 30_000 + b"]" * 30_000,  # nested too deeply, under the size limit
        b'{"title": "big", "description": "' + b"z" * (MAX_BYTES + 10) + b'"}',  # oversized
        b'{"title": "dup", "title": 5}',
        b"\xef\xbb\xbf{\"title\": \"BOM before JSON\"}",
    ]),
)


# Messages that once stopped the service (parse_record raised instead of refusing them, or a
# headline passed validation that Kafka/Milvus could not encode): sent with every example.
REGRESSIONS = [
    b'{"title": "x", "published_at": Infinity}',
    b'{"title": "x", "published_at": 1e400}',
    b'{"title": "x", "published_at": 1' + b"0" * 400 + b"}",
    b'{"title": "x", "published_at": "1' + b"0" * 400 + b'"}',
    b'{"title": "x", "published_at": ' + b"7" * 4400 + b"}",
    b'{"title": "lone \\ud83d surrogate"}',
    b'{"title": "ok", "id": "\\udc00"}',
    b'{"title": "ok", "source": "\\ud800"}',
]


def _classify(values: list[bytes]) -> list[Headline | Rejection]:
    return [
        parse_record(RawRecord("t", 0, 0, None, v, (), 0), max_bytes=MAX_BYTES, ingested_at_ms=0) for v in values
    ]


async def _end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: o for tp, o in ends.items()}
    finally:
        await consumer.stop()


async def _read_range(bootstrap: str, topic: str, start: dict[int, int]) -> list[Any]:
    """Every record of ``topic`` from ``start`` offsets to the current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(start)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            consumer.seek(tp, start[tp.partition])
        out: list[Any] = []
        deadline = time.monotonic() + 60
        while any([await consumer.position(tp) < ends[tp] for tp in tps]) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(*tps, timeout_ms=1000)).items():
                out.extend(m for m in messages if m.offset < ends[tp])
        return out
    finally:
        await consumer.stop()


@pytest.fixture(scope="module")
def fuzz_service(kafka_bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict]]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    s = fault_settings(kafka_bootstrap_servers, str(tmp / "milvus.db"), kafka={"max_message_bytes": MAX_BYTES})
    svc = ServiceProcess(settings_env(s), tmp / "service.log", [])
    try:
        svc.start()
        yield svc, s
    finally:
        if svc.proc is not None and svc.proc.poll() is None:
            svc.terminate()


_totals = {"examples": 0, "sent": 0, "dead_lettered": 0, "valid": 0}


@settings(
    max_examples=4, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
)
@given(values=st.lists(_messages, min_size=60, max_size=110))
def test_fuzzed_messages_are_dead_lettered_or_processed(
    fuzz_service: tuple[Any, dict], kafka_bootstrap_servers: str, values: list[bytes]
) -> None:
    svc, s = fuzz_service
    values = values + REGRESSIONS
    k = s["kafka"]
    bootstrap = kafka_bootstrap_servers
    assert svc.proc.poll() is None, f"the service died before this example:\n{svc.log_tail()}"
    nonce = uuid.uuid4().hex[:8]
    keys: list[bytes | None] = [f"{nonce}-{i}".encode() for i in range(len(values))]
    verdicts = _classify(values)
    rejected = {keys[i]: (values[i], v) for i, v in enumerate(verdicts) if isinstance(v, Rejection)}
    valid_ids = {v.id for v in verdicts if isinstance(v, Headline)}
    n_valid = sum(isinstance(v, Headline) for v in verdicts)

    dlq_start = asyncio.run(_end_offsets(bootstrap, k["dead_letter_topic"], 1))
    events_start = asyncio.run(_end_offsets(bootstrap, k["assignments_topic"], PARTITIONS))
    _, input_before = offsets(bootstrap, k["group_id"], k["input_topic"])
    produce(bootstrap, k["input_topic"], values, keys=keys)

    deadline = time.monotonic() + 120
    while not all_committed(bootstrap, s, input_before + len(values)):
        assert svc.proc.poll() is None, f"the service died on fuzzed input:\n{svc.log_tail(80)}"
        assert time.monotonic() < deadline, f"input not fully committed after 120 s:\n{svc.log_tail(40)}"
        time.sleep(1)
    assert svc.proc.poll() is None and patient(svc.readyz)[0] == 200

    dead = asyncio.run(_read_range(bootstrap, k["dead_letter_topic"], dlq_start))
    by_key = {m.key: m for m in dead}
    assert len(by_key) == len(dead), "a message was dead-lettered twice"
    assert set(by_key) == set(rejected), (
        f"missing from DLQ: {sorted(set(rejected) - set(by_key))[:5]}, unexpected: {sorted(set(by_key) - set(rejected))[:5]}"
    )
    for key, (value, rejection) in rejected.items():
        message = by_key[key]
        headers = dict(message.headers)
        assert message.value == value
        assert headers["dlq_error_type"].decode() == rejection.reason.value
        assert headers["dlq_reason"], "a dead letter without a reason text"
        assert headers["dlq_source_topic"].decode() == k["input_topic"]

    events = [AssignmentEvent.model_validate_json(m.value) for m in asyncio.run(
        _read_range(bootstrap, k["assignments_topic"], events_start))]
    arrivals = {e.headline_id for e in events if e.reason == "arrival"}
    assert arrivals == valid_ids, (
        f"valid without event: {sorted(valid_ids - arrivals)[:5]}, unexpected: {sorted(arrivals - valid_ids)[:5]}"
    )
    assert len(dead) + n_valid == len(values)
    _totals["examples"] += 1
    _totals["sent"] += len(values)
    _totals["dead_lettered"] += len(dead)
    _totals["valid"] += n_valid
    report("fuzz (running totals)", **_totals, distinct_valid_ids_this_example=len(valid_ids))

