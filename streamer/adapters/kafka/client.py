"""Kafka client options, error translation and topic creation shared by the Kafka adapters.

Security settings (SASL PLAIN/SCRAM, SSL) pass through; the password is read from its
``SecretStr`` only when a client is built and never logged. aiokafka's exceptions become
:class:`~streamer.domain.errors.BrokerError` here, with ``retriable`` set from what they mean.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
)

from streamer.config.connections import KafkaSettings
from streamer.domain.errors import BrokerError, ConfigError
from streamer.observability.logs import get_logger

__all__ = ["client_options", "ensure_topics", "tail_topic", "translate_errors"]


log = get_logger(__name__)



@contextmanager
def translate_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except BrokerError:
        raise
    except asyncio.CancelledError:
        raise
    except KafkaError as exc:
        error = BrokerError(f"Kafka {operation} failed: {type(exc).__name__}: {exc}")
        auth_failed = isinstance(exc, AuthenticationFailedError | SaslAuthenticationFailed)
        # aiokafka marks its client-side timeout (e.g. a produce batch that found no broker within
        # request_timeout_ms) as not retriable, but it is the very symptom of a broker outage.
        transient = isinstance(exc, KafkaTimeoutError)
        error.retriable = (bool(getattr(exc, "retriable", True)) or transient) and not auth_failed
        raise error from exc


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection and security options shared by consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else None
        # With api_version="auto" aiokafka bootstraps with the legacy SASL framing, and a wrong
        # password only shows as "connection closed". An explicit version (what "auto" detects on
        # any broker since 2.6) makes it use SaslAuthenticate and raise SaslAuthenticationFailed.
        options["api_version"] = "2.6.0"
    if settings.security_protocol.endswith("SSL"):
        try:
            context = ssl.create_default_context(cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None)
            if settings.ssl_certfile:
                context.load_cert_chain(
                    str(settings.ssl_certfile), str(settings.ssl_keyfile) if settings.ssl_keyfile else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"kafka.ssl_cafile/ssl_certfile/ssl_keyfile: cannot load: {exc}") from exc
        context.check_hostname = settings.ssl_check_hostname
        options["ssl_context"] = context
    return options


async def ensure_topics(settings: KafkaSettings, topics: dict[str, dict[str, Any]], *, timeout_s: float = 30) -> None:
    """Create missing topics: ``{name: {"partitions": int, "config": {...}}}``. Existing topics are left alone."""
    admin = AIOKafkaAdminClient(**client_options(settings))
    with translate_errors("admin connect"):
        await asyncio.wait_for(admin.start(), timeout_s)
    try:
        with translate_errors("list topics"):
            existing = set(await asyncio.wait_for(admin.list_topics(), timeout_s))
        missing = [
            NewTopic(
                name=name,
                num_partitions=spec.get("partitions", 1),
                replication_factor=spec.get("replication_factor", 1),
                topic_configs=spec.get("config", {}),
            )
            for name, spec in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                with translate_errors("create topics"):
                    await asyncio.wait_for(admin.create_topics(missing), timeout_s)
            except BrokerError as exc:
                if not isinstance(exc.__cause__, TopicAlreadyExistsError):
                    raise
            log.info("kafka topics created", topics=[t.name for t in missing])
    finally:
        await admin.close()


async def tail_topic(
    settings: KafkaSettings,
    topic: str,
    stop: asyncio.Event,
    *,
    what: str,
    poll_ms: int,
    pinned: asyncio.Event | None = None,
    **consumer_options: Any,
) -> AsyncIterator[Any]:
    """Every record written to ``topic`` after the start, until ``stop`` (no consumer group,
    nothing committed). Use it under ``contextlib.aclosing`` so the consumer stops with the loop.

    ``pinned`` is set once the end offsets are read: every record written after that is
    yielded. A failed poll is logged as ``"{what} poll failed"`` and tried again a second later.
    """
    consumer = AIOKafkaConsumer(
        enable_auto_commit=False, auto_offset_reset="latest", **consumer_options, **client_options(settings)
    )
    with translate_errors(f"{what} start"):
        await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or {0})]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        if pinned is not None:
            for tp in tps:
                await consumer.position(tp)  # resolve "the end" now, not at the first fetch
            pinned.set()
        while not stop.is_set():
            try:
                batches = await consumer.getmany(timeout_ms=poll_ms)
            except KafkaError as exc:
                log.warning(f"{what} poll failed", error=str(exc))
                await asyncio.sleep(1)
                continue
            for messages in batches.values():
                for m in messages:
                    yield m
    finally:
        await consumer.stop()
