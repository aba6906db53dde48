"""The confluent-kafka backend (``client = confluent``): librdkafka behind the same classes and options.

confluent-kafka's calls block and report through callbacks, so the event loop never calls a blocking one:
the consumer runs them in a thread of its own (``confluent_consumer``), the producer only enqueues and
serves delivery reports from the loop (``confluent_producer``). This module holds what
``bspump.kafka.backend`` loads by name, ``BACKEND``: it builds both, probes the cluster, and classifies
errors with the codes of ``confluent_errors``.
"""

from __future__ import annotations

import asyncio
import logging

from confluent_kafka.admin import AdminClient

from bspump import ErrorKind
from bspump.log_limit import limit_logger_rate

from .backend import AssignHandler, LinkGate, RevokeHandler
from .confluent_consumer import ConfluentConsumer
from .confluent_errors import _LINK_CODES, _TRANSIENT_CODES, _kafka_error
from .confluent_producer import ConfluentProducer
from .options import ClientOptions, ConsumerSettings, ProducerSettings, confluent_common

librdkafka_log = logging.getLogger("bspump.kafka.librdkafka")


class ConfluentBackend:
    """``client = confluent``."""

    name = "confluent"

    def consumer(
        self,
        options: ClientOptions,
        settings: ConsumerSettings,
        on_assign: AssignHandler,
        on_revoke: RevokeHandler,
        revoke_timeout: float,
        link: LinkGate,
    ) -> ConfluentConsumer:
        return ConfluentConsumer(options, settings, on_assign, on_revoke, revoke_timeout)

    def producer(self, options: ClientOptions, settings: ProducerSettings, link: LinkGate) -> ConfluentProducer:
        """librdkafka reconnects on its own, with a backoff capped at the connection's ``reconnect_max``
        (``reconnect.backoff.max.ms``): it does not spin, so ``link`` is not needed."""
        return ConfluentProducer(options, settings)

    def limit_logs(self, interval: float) -> None:
        """librdkafka's log lines arrive through the ``bspump.kafka.librdkafka`` logger."""
        limit_logger_rate(librdkafka_log.name, interval)

    async def probe(self, options: ClientOptions, timeout: float) -> None:
        """Fetch cluster metadata once (in a thread): proves the address, TLS and credentials work."""
        admin = AdminClient(confluent_common(options), logger=librdkafka_log)
        await asyncio.to_thread(admin.list_topics, None, timeout)

    def classify(self, error: BaseException) -> ErrorKind:
        """Link for librdkafka's transport, resolution and time-out codes (and any ``OSError``), transient for
        retriable codes (no leader, queue full, rebalance, unknown partition...), permanent otherwise."""
        kafka_error = _kafka_error(error)
        if kafka_error is None:
            return ErrorKind.LINK if isinstance(error, OSError) else ErrorKind.PERMANENT
        code = kafka_error.code()
        if code in _LINK_CODES:
            return ErrorKind.LINK
        if kafka_error.retriable() or code in _TRANSIENT_CODES:
            return ErrorKind.TRANSIENT
        return ErrorKind.PERMANENT


BACKEND = ConfluentBackend()
