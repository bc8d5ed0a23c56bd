"""Decisions onto `gatewatch.decisions`: the audit trail, keyed by subject (a compacted topic keeps
each subject's latest decision for a consumer that starts late)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from pipeline.decisions import Decision

__all__ = ["KafkaDecisionSink"]


class KafkaDecisionSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    async def publish(self, decisions: list[Decision]) -> None:
        """Returns once the broker has every decision (the worker commits offsets only after)."""
        futures = [
            await self.producer.send(self.topic, d.to_json(), key=d.subject.encode())
            for d in decisions
        ]
        if futures:
            await asyncio.gather(*futures)
