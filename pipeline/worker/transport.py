"""Faust's Kafka transport with one thing changed: how long a worker's fetch may wait for data.

Faust hard-codes `fetch_max_wait_ms=1500` for the worker consumer. A Kafka broker answers a
waiting fetch as soon as data arrives, but Tansu (the embedded broker) holds it the full wait,
which put up to 1.5 s between an envelope landing and the worker seeing it: most of the
detection-to-enforcement time measured by bench/time_to_enforce.py (p99 0.76 s at 5k events/s;
0.09 s with a 100 ms wait). Everything else is Faust's own driver, untouched.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

__all__ = ["GatewatchApp"]


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher; set before start.
        consumer._fetch_max_wait_ms = self.app.gatewatch_fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class GatewatchApp(faust.App):
    """A Faust app whose worker consumer waits at most `fetch_max_wait_ms` per fetch."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100, **kwargs: Any) -> None:
        self.gatewatch_fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> _Transport:
        return _Transport(self.conf.broker_consumer, self)
