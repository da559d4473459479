"""The real Kafka test broker (tests/plugins/kafka_broker.py, tools/kafka/broker.py) works as promised."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError, SaslAuthenticationFailed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

N_MESSAGES = 100


def _sasl_kwargs(broker, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> dict:
    return dict(
        bootstrap_servers=broker.sasl_bootstrap_servers,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
    )


async def _produce(topic: str, n: int, start: int = 0, **client_kwargs) -> None:
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_kwargs)
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=str(i % 7).encode(), value=f"msg-{i}".encode())
            for i in range(start, start + n)
        ]
        await producer.flush()
        for fut in futures:
            meta = await fut
            assert meta.offset >= 0
    finally:
        await producer.stop()


async def _consume(topic: str, n: int, *, timeout_s: float = 30, group_id: str | None = None,
                   commit: bool = False, **client_kwargs) -> list:
    consumer = AIOKafkaConsumer(
        topic, group_id=group_id, auto_offset_reset="earliest", enable_auto_commit=False, **client_kwargs
    )
    await consumer.start()
    records: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(records) < n and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=500, max_records=n - len(records))
            for recs in batch.values():
                records.extend(recs)
        if commit and records:
            last: dict[TopicPartition, int] = {}
            for r in records:
                last[TopicPartition(r.topic, r.partition)] = r.offset + 1
            await consumer.commit(last)
    finally:
        await consumer.stop()
    return records


def _values(records) -> list[str]:
    return [r.value.decode() for r in records]


@pytest.mark.asyncio
async def test_produce_consume_plaintext_idempotent(kafka_broker, kafka_topic):
    topic = kafka_topic(partitions=3)
    await _produce(topic, N_MESSAGES, bootstrap_servers=kafka_broker.bootstrap_servers)
    records = await _consume(topic, N_MESSAGES, bootstrap_servers=kafka_broker.bootstrap_servers)

    assert sorted(_values(records)) == sorted(f"msg-{i}" for i in range(N_MESSAGES))
    assert {r.partition for r in records} <= {0, 1, 2}
    for p in {r.partition for r in records}:  # per-partition order is production order
        seq = [int(r.value.decode().split("-")[1]) for r in records if r.partition == p]
        assert seq == sorted(seq)


@pytest.mark.asyncio
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_scram_right_password(kafka_broker, kafka_topic, kafka_scram_credentials, mechanism):
    user, password = kafka_scram_credentials
    assert kafka_broker.sasl_bootstrap_servers != kafka_broker.bootstrap_servers
    topic = kafka_topic()
    kwargs = _sasl_kwargs(kafka_broker, user, password, mechanism)
    await _produce(topic, 10, **kwargs)
    records = await _consume(topic, 10, **kwargs)
    assert sorted(_values(records)) == sorted(f"msg-{i}" for i in range(10))


@pytest.mark.asyncio
async def test_scram_wrong_password_is_rejected(kafka_broker, kafka_scram_credentials):
    user, _ = kafka_scram_credentials
    host, port = kafka_broker.sasl_bootstrap_servers.rsplit(":", 1)

    # Connection level: the broker's SASL_AUTHENTICATION_FAILED (error 58) surfaces as aiokafka's
    # SaslAuthenticationFailed. The version hint makes aiokafka negotiate ApiVersions and use
    # SaslAuthenticate requests (as its clients do); without it (plain create_conn) the legacy
    # raw-token exchange only sees the broker closing the connection.
    conn = AIOKafkaConnection(
        host, int(port), security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username=user, sasl_plain_password="not-the-password", version_hint=(2, 0, 0),
    )
    try:
        with pytest.raises(SaslAuthenticationFailed, match="invalid credentials"):
            await conn.connect()
    finally:
        conn.close()

    # Client level. With an explicit api_version (what "auto" detects against Kafka 4 anyway),
    # aiokafka clients raise SaslAuthenticationFailed from start() ...
    producer = AIOKafkaProducer(api_version="2.6.0", **_sasl_kwargs(kafka_broker, user, "not-the-password"))
    with pytest.raises(SaslAuthenticationFailed):
        await producer.start()
    await producer.stop()
    # ... but with the default api_version="auto" the bootstrap connection uses the legacy SASL
    # framing and the failure only shows up as the broker closing the connection.
    producer = AIOKafkaProducer(**_sasl_kwargs(kafka_broker, user, "not-the-password"))
    with pytest.raises(KafkaConnectionError):
        await producer.start()
    await producer.stop()

    # PLAINTEXT clients must not get through the SASL listener either.
    plain = AIOKafkaProducer(bootstrap_servers=kafka_broker.sasl_bootstrap_servers, request_timeout_ms=3000)
    with pytest.raises(KafkaConnectionError):
        await plain.start()
    await plain.stop()


@pytest.mark.asyncio
async def test_kill_and_restart_keeps_committed_data(kafka_broker, kafka_topic):
    bootstrap = kafka_broker.bootstrap_servers
    ports = (kafka_broker.plaintext_port, kafka_broker.controller_port, kafka_broker.sasl_port)
    old_pid = kafka_broker.pid
    topic = kafka_topic(partitions=2)
    group = f"g-{uuid.uuid4().hex}"

    await _produce(topic, N_MESSAGES, bootstrap_servers=bootstrap)
    first = await _consume(topic, 40, group_id=group, commit=True, bootstrap_servers=bootstrap)
    assert len(first) == 40

    try:
        kafka_broker.kill()
        assert not kafka_broker.is_running
        kafka_broker.restart()
    finally:
        if not kafka_broker.is_running:  # never leave the session broker dead for later tests
            kafka_broker.start()

    assert kafka_broker.is_running
    assert kafka_broker.pid != old_pid
    assert kafka_broker.bootstrap_servers == bootstrap
    assert (kafka_broker.plaintext_port, kafka_broker.controller_port, kafka_broker.sasl_port) == ports

    # Every acknowledged (acks=all) message survived the SIGKILL ...
    everything = await _consume(topic, N_MESSAGES, bootstrap_servers=bootstrap)
    assert sorted(_values(everything)) == sorted(f"msg-{i}" for i in range(N_MESSAGES))
    # ... and so did the committed consumer-group offsets: the group resumes after its 40.
    rest = await _consume(topic, N_MESSAGES - 40, group_id=group, bootstrap_servers=bootstrap)
    assert len(rest) == N_MESSAGES - 40
    assert set(_values(first)).isdisjoint(_values(rest))
    assert sorted(_values(first) + _values(rest)) == sorted(_values(everything))

    # The broker keeps accepting idempotent writes after the crash.
    await _produce(topic, 10, start=N_MESSAGES, bootstrap_servers=bootstrap)
