"""The contract between KafkaSource/KafkaSink and a client library (aiokafka or confluent-kafka).

Partitions are plain ``(topic, partition)`` tuples everywhere, so positions tracked by the source do not
depend on the client. Backends are imported lazily: confluent-kafka is an optional extra.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from bspump import ErrorKind

from .contexts import KafkaContexts
from .options import ClientOptions, ConsumerSettings, ProducerSettings

Partition = tuple[str, int]

Headers = Sequence[tuple[str, bytes]]


class OutBatch(NamedTuple):
    """Outgoing records in columns (cheaper to build and to walk than one tuple per record).

    ``values[i]`` goes to ``topics[i]`` (or ``topic`` when ``topics`` is None) with key ``keys[i]``
    (no keys at all when ``keys`` is None) and headers ``headers[i]`` (none when ``headers`` is None).
    With ``encode``, ``values`` holds events and the backend calls ``encode(value)`` right before handing
    each record to the client: the encoded bytes are copied into the client's buffer and freed at once,
    instead of a whole batch of fresh buffers being held (which makes glibc return and re-fault memory
    pages on every batch). An exception from ``encode`` fails that record only.
    """

    topic: str
    values: list[Any]
    keys: list[bytes | None] | None = None
    headers: list[Headers | None] | None = None
    topics: list[str] | None = None
    encode: Callable[[Any], bytes | None] | None = None


#: Called once per ``send`` call, on the event loop, when every record of the call is settled, with the
#: ``(index, error)`` of each record the broker did not take.
SendDone = Callable[[list[tuple[int, BaseException]]], None]

#: Called when partitions are revoked; returns the offsets to commit for them before they go.
RevokeHandler = Callable[[list[Partition]], Coroutine[Any, Any, dict[Partition, int]]]
AssignHandler = Callable[[list[Partition]], None]


class LinkGate(Protocol):
    """What a client calls when it finds the cluster unreachable (the :class:`KafkaConnection` it belongs to)."""

    async def wait_for_link(self, error: BaseException | None) -> None:
        """Return once the cluster is reachable again: the connection reconnects with its own backoff, and a
        client library that would retry at once waits here instead."""
        ...

    def link_restored(self) -> None:
        """The client reached the cluster again (its next wait starts from the shortest delay)."""
        ...


class PartitionTurns:
    """Round robin per topic: which of a topic's ``count`` partitions the next call's unkeyed records go to
    (all of them to one, the next call to the next one), as both producers place unkeyed records."""

    def __init__(self) -> None:
        self._turn: dict[str, int] = {}

    def next(self, topic: str, count: int) -> int:
        """The index, in ``range(count)``, of the partition for this call."""
        turn = self._turn[topic] = (self._turn.get(topic, -1) + 1) % count
        return turn


class Fetched(NamedTuple):
    """One fetched batch: raw values, one context per value (lazy: :class:`KafkaContexts`), and the next
    offset per partition."""

    values: list[bytes | None]
    contexts: KafkaContexts
    positions: dict[Partition, int]


class ConsumerClient(Protocol):
    """A group member that fetches batches and commits explicit offsets."""

    async def start(self) -> None: ...

    async def fetch(self, max_records: int, timeout: float) -> Fetched: ...

    async def commit(self, offsets: Mapping[Partition, int]) -> None: ...

    def assignment(self) -> set[Partition]: ...

    async def idle(self) -> None:
        """Called while the pipeline takes no records (backpressure): keep the group membership alive
        (a member that does not poll for max_poll_interval_ms leaves the group) without fetching more."""
        ...

    def highwaters(self) -> dict[Partition, int]:
        """The last known end offset (high watermark) of each assigned partition, without a request."""
        ...

    async def close(self) -> None: ...


class ProducerClient(Protocol):
    """A producer that reports each record's broker acknowledgement."""

    async def start(self) -> None: ...

    async def send(self, out: OutBatch, done: SendDone) -> None: ...

    async def close(self) -> None: ...


class Backend(Protocol):
    """A client library adapter."""

    name: str

    def consumer(
        self,
        options: ClientOptions,
        settings: ConsumerSettings,
        on_assign: AssignHandler,
        on_revoke: RevokeHandler,
        revoke_timeout: float,
        link: LinkGate,
    ) -> ConsumerClient: ...

    def producer(self, options: ClientOptions, settings: ProducerSettings, link: LinkGate) -> ProducerClient: ...

    def limit_logs(self, interval: float) -> None:
        """Rate-limit the client library's log records (one line per distinct message per ``interval``)."""
        ...

    async def probe(self, options: ClientOptions, timeout: float) -> None: ...

    def classify(self, error: BaseException) -> ErrorKind:
        """What kind of failure an exception of this client library is (see ``bspump.failures``)."""
        ...


_MODULES = {"aiokafka": "bspump.kafka.aiokafka_backend", "confluent": "bspump.kafka.confluent_backend"}


def load_backend(name: str) -> Backend:
    """The backend for ``client = name``; raises ImportError naming what to install."""
    module = importlib.import_module(_MODULES[name])
    backend: Backend = module.BACKEND
    return backend
