"""Error policies: what a pipeline does with an event that a source, processor or sink failed on.

Per pipeline (``error_policy`` in ``[pipeline:ID]``): ``stop`` ends the pipeline and the application (exit
code 1) without committing the failed event's position; ``skip`` counts, logs and drops the event;
``retry`` tries a failed processor again ``retry_attempts`` times, then applies ``retry_fallback``;
``dead-letter`` hands the event, with the error in its context, to the pipeline's dead-letter sink.

Sinks first sort the events they could not write by :class:`~bspump.ErrorKind` (:func:`triage`): transient
and link failures are tried again, permanent ones (and transient ones past the sink's ``retry_timeout``) meet
the policy here.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import context as keys
from .batch import Batch, Context
from .delivery import Delivery
from .errors import ProcessingError
from .failures import ErrorKind, ItemFailure

if TYPE_CHECKING:
    from .component import Component
    from .pipeline import Pipeline
    from .sink import Sink

log = logging.getLogger("bspump.pipeline")

#: Skipped events logged at WARNING per pipeline before the rest go to DEBUG (a bad file must not flood logs).
SKIP_LOG_LIMIT = 10


class ErrorPolicy(enum.Enum):
    """What a pipeline does with an event that a processor or sink failed on."""

    STOP = "stop"
    SKIP = "skip"
    RETRY = "retry"
    DEAD_LETTER = "dead-letter"


#: The policies' names, as ``error_policy`` and ``retry_fallback`` take them, and other accepted spellings.
POLICY_NAMES = tuple(policy.value for policy in ErrorPolicy)
POLICY_ALIASES = {"dead_letter": "dead-letter", "deadletter": "dead-letter"}


class StopRequested(Exception):
    """Raised inside the pipeline when the ``stop`` policy applies; carries the error to report."""

    def __init__(self, error: ProcessingError) -> None:
        super().__init__(str(error))
        self.error = error


def describe_position(context: Mapping[str, Any]) -> str:
    """Where an event came from, from its context (never the event's content, which may hold secrets)."""
    return ", ".join(f"{k}={context[k]!r}" for k in keys.POSITION_KEYS if k in context and k != keys.KEY)


def dead_letter_context(context: Context, error: BaseException, component: Component, pipeline_id: str) -> Context:
    """The context a dead-lettered event travels with: its own, plus ``context.DEAD_LETTER_KEYS``."""
    return {
        **context,
        keys.ERROR: f"{type(error).__name__}: {error}",
        keys.ERROR_TYPE: type(error).__name__,
        keys.ERROR_COMPONENT: component.qualified_id,
        keys.ERROR_PIPELINE: pipeline_id,
    }


class PolicyEnforcer:
    """Applies one pipeline's policy to single failed events; the pipeline owns one."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.skips_logged = 0

    def apply(
        self,
        policy: ErrorPolicy,
        component: Component,
        context: Context,
        event: Any,
        error: BaseException,
        delivery: Delivery,
    ) -> None:
        """Skip, dead-letter or stop for one failed event; ``delivery`` does not yet count the event.

        Raises :class:`StopRequested` under ``stop`` (and when the dead-letter sink itself failed).
        """
        pipeline = self.pipeline
        problem = ProcessingError(pipeline.id, component.id, error, describe_position(context))
        if policy is ErrorPolicy.SKIP:
            pipeline.counters.dropped += 1
            self.skips_logged += 1
            if self.skips_logged <= SKIP_LOG_LIMIT:
                more = " (further skips are logged at DEBUG level; the errors counter has them all)" \
                    if self.skips_logged == SKIP_LOG_LIMIT else ""
                log.warning("%s; event skipped (error_policy = skip)%s", problem, more)
            else:
                log.debug("%s; event skipped (error_policy = skip)", problem)
            return
        dead_letter = pipeline.dead_letter_sink
        if policy is ErrorPolicy.DEAD_LETTER and dead_letter is not None:
            if component is dead_letter:
                raise StopRequested(problem)
            log.info("%s; event sent to dead-letter sink %r", problem, dead_letter.id)
            letter = dead_letter_context(context, error, component, pipeline.id)
            pipeline.count_in_flight(1)
            delivery.add(1)
            dead_letter.counters.events_in += 1
            dead_letter.put(Batch([event], delivery, contexts=[letter], counters=dead_letter.counters))
            return
        raise StopRequested(problem)


@dataclass
class Triage:
    """The failed events of one write, sorted: ``retry`` them, hand ``final`` to the error policy.

    ``link_error`` is the first error that said the link is down (the sink tells its connections), or None;
    ``expired`` counts the transient failures in ``final`` (tried for longer than the sink's retry budget).
    """

    retry: list[ItemFailure] = field(default_factory=list)
    final: list[ItemFailure] = field(default_factory=list)
    link_error: BaseException | None = None
    expired: int = 0


def triage(sink: Sink, failures: Iterable[ItemFailure], failing_since: float | None, timeout: float) -> Triage:
    """Sort ``failures`` by kind (classified by the sink's connection where the sink did not say).

    Link failures are retried for as long as it takes; transient ones while ``timeout`` seconds have not
    passed since ``failing_since`` (``time.monotonic()`` of the first failure; 0 = no limit); permanent ones
    and expired transient ones are final.
    """
    result = Triage()
    expired = bool(timeout) and failing_since is not None and time.monotonic() - failing_since >= timeout
    for failure in failures:
        kind = failure.kind or sink.classify(failure.error)
        if kind is ErrorKind.LINK:
            result.retry.append(failure)
            if result.link_error is None:
                result.link_error = failure.error
        elif kind is ErrorKind.TRANSIENT and not expired:
            result.retry.append(failure)
        else:
            result.final.append(failure)
            if kind is ErrorKind.TRANSIENT:
                result.expired += 1
    return result
