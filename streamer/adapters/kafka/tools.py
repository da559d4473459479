"""Command-line helpers: replay messages into a topic (``streamer produce``) and read one (``streamer tail``)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streamer.adapters.kafka.client import client_options, translate_errors
from streamer.config.connections import KafkaSettings

__all__ = ["consume_messages", "produce_messages"]


async def produce_messages(
    settings: KafkaSettings, topic: str, messages: Any, *, rate_per_s: float | None = None
) -> int:
    """Publish ``(key, value)`` pairs (an iterable) to ``topic``, optionally paced; returns the count."""
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, **client_options(settings))
    with translate_errors("producer start"):
        await producer.start()
    sent = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    pending = []
    try:
        for key, value in messages:
            if rate_per_s:
                due = started + sent / rate_per_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            with translate_errors(f"produce to {topic}"):
                pending.append(await producer.send(topic, value=value, key=key))
            sent += 1
            if len(pending) >= 1000:
                await asyncio.gather(*pending)
                pending.clear()
        with translate_errors(f"produce to {topic}"):
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent


async def consume_messages(
    settings: KafkaSettings, topic: str, *, from_beginning: bool, max_messages: int | None, idle_timeout_s: float | None
) -> Any:
    """Yield ``(key, value, headers)`` of ``topic`` (no consumer group); stops after ``max_messages``
    or ``idle_timeout_s`` without new messages."""
    consumer = AIOKafkaConsumer(
        topic,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **client_options(settings),
    )
    with translate_errors("consumer start"):
        await consumer.start()
    seen = 0
    try:
        while max_messages is None or seen < max_messages:
            timeout_ms = int(idle_timeout_s * 1000) if idle_timeout_s else 1000
            batches = await consumer.getmany(timeout_ms=timeout_ms)
            if not batches and idle_timeout_s:
                return
            for messages in batches.values():
                for m in messages:
                    yield m.key, m.value, tuple(m.headers or ())
                    seen += 1
    finally:
        await consumer.stop()


