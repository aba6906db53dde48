"""How the confluent backend tells librdkafka's errors apart.

Which error codes mean the link to the cluster is lost (reconnect), which are transient (send the records
again), and how to find the ``KafkaError`` inside an exception. ``ConfluentBackend`` classifies with them;
the producer also looks for an unknown partition among its failures. A module of its own so that the
backend, which builds the consumer and the producer, and the producer both import it without a cycle.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException

_LINK_CODES = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._RESOLVE,
}
_TRANSIENT_CODES = _LINK_CODES | {
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError._QUEUE_FULL,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError._UNKNOWN_PARTITION,  # a partition chosen from stale metadata: sent again, partitioned anew
}


def _kafka_error(error: BaseException) -> KafkaError | None:
    if isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError):
        return error.args[0]
    return None
