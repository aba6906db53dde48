"""Pipelines: sources -> processors -> sink, driven a batch at a time."""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any, ClassVar

from .backoff import Backoff
from .batch import Batch, Context
from .component import Component, build_config
from .config import Choice, Int, Seconds
from .connection import Connection, ConnectionState
from .delivery import Delivery
from .errors import PipelineBuildError, PipelineStoppedError, describe_error
from .lazy_contexts import UNREAD_CONTEXT, as_list, reads_context, select_contexts
from .metrics import Counters
from .policy import POLICY_ALIASES, POLICY_NAMES, ErrorPolicy, PolicyEnforcer, StopRequested
from .processor import Generator, Processor
from .ratelimit import RateLimitedLog
from .sink import Sink
from .source import Source

if TYPE_CHECKING:
    from .application import BSPumpApplication

log = logging.getLogger("bspump.pipeline")

class PipelineState(enum.Enum):
    """Where a pipeline is in its life."""

    BUILT = "built"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"
    FAILED = "failed"


class _Stage:
    """A processor as the hot path sees it: its bound method, whether it reads its context, its counters."""

    __slots__ = ("component", "counters", "failed", "fn", "generator", "index", "prepare", "reads_context")

    def __init__(self, component: Processor, index: int) -> None:
        self.component = component
        self.index = index
        self.failed = 0  # events of the current batch that failed here (not "dropped" by the stage)
        self.generator = isinstance(component, Generator)
        self.fn: Any = component.generate if isinstance(component, Generator) else component.process
        # A processor whose code never reads its context gets a placeholder: lazily built per-event contexts
        # (LazyContexts) then stay unbuilt through it.
        self.reads_context = reads_context(self.fn)
        # Only a processor that overrides prepare() makes the pipeline await anything between stages.
        self.prepare = component.prepare if type(component).prepare is not Processor.prepare else None
        self.counters = component.counters

    def count(self, taken: int, given: int) -> None:
        """Update the counters after a batch passed this stage; failed events are errors, not drops."""
        counters = self.counters
        counters.events_in += taken
        counters.events_out += given
        if not self.generator:
            counters.dropped += taken - given - self.failed
        self.failed = 0


class _Retry:
    """An event waiting to be retried at a stage, under the ``retry`` policy."""

    __slots__ = ("attempts", "context", "error", "event", "stage")

    def __init__(self, stage: _Stage, context: Context, event: Any, error: BaseException) -> None:
        self.stage = stage
        self.context = context
        self.event = event
        self.error = error
        self.attempts = 0


class Pipeline:
    """Sources feed batches through processors into one sink, with bounded events in flight.

    Subclass it and call :meth:`build` in ``__init__``, or declare it in pipelines.conf. Settings in
    ``[pipeline:ID]``: ``max_in_flight`` (events handed to sinks and not yet acknowledged before the
    sources pause), ``error_policy`` (stop, skip, retry, dead-letter), ``retry_attempts``,
    ``retry_backoff``/``retry_backoff_max`` (seconds), ``retry_fallback`` (policy once retries are
    exhausted), ``dead_letter`` (the ID of the dead-letter sink when declared in the file) and
    ``drain_timeout`` (seconds a graceful stop waits for acknowledgements) and, for pipelines declared
    in the file, ``components`` (their order). Unknown keys are errors.
    """

    ConfigDefaults: ClassVar[dict[str, Any]] = {
        "max_in_flight": Int(10000, min=1, max=10_000_000),
        "error_policy": Choice("stop", POLICY_NAMES, aliases=POLICY_ALIASES),
        "retry_attempts": Int(3, min=0, max=1000),
        "retry_backoff": Seconds(0.2, min=0.001),
        "retry_backoff_max": Seconds(10.0, min=0.001),
        "retry_fallback": Choice("stop", POLICY_NAMES, aliases=POLICY_ALIASES),
        "dead_letter": "",
        "drain_timeout": Seconds(30.0, min=0.0),
        "components": [],
    }

    def __init__(
        self,
        app: BSPumpApplication,
        pipeline_id: str | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app
        self.id = pipeline_id or type(self).__name__
        self.Config = build_config(type(self), app, f"pipeline:{self.id}", config)
        self.sources: list[Source] = []
        self.processors: list[Processor] = []
        self.sink: Sink | None = None
        self.dead_letter_sink: Sink | None = None
        self.counters = Counters()
        self.state = PipelineState.BUILT
        self.error: BaseException | None = None
        self.in_flight = 0
        self.max_in_flight = self.Config.getint("max_in_flight")
        self.error_policy = ErrorPolicy(self.Config.getchoice("error_policy"))
        self.retry_fallback = ErrorPolicy(self.Config.getchoice("retry_fallback"))
        if self.retry_fallback is ErrorPolicy.RETRY:
            raise self.Config.error("retry_fallback", "cannot be 'retry'; choose stop, skip or dead-letter")
        self.retry_attempts = self.Config.getint("retry_attempts")
        self._stages: list[_Stage] = []
        self._prepared = False  # some processor has an async prepare(): the batch runs stage group by group
        self._prepare_log = RateLimitedLog(log)
        self._throttles: set[str] = {"not started"}
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._finished = asyncio.Event()
        self._source_tasks: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None
        self._connections: list[Connection] = []
        self.policies = PolicyEnforcer(self)
        self.started_at: float | None = None
        self.stopped_at: float | None = None
        self._taps: list[Callable[[list[Any]], None]] = []

    # -- assembly ---------------------------------------------------------------------------------------
    def build(
        self,
        *components: Source | Processor | Sink | Sequence[Source],
        dead_letter: Sink | None = None,
    ) -> Pipeline:
        """Assemble the pipeline: one or more sources (or a list of them), processors, then one sink.

        ``dead_letter`` is the sink that receives events failed under the ``dead-letter`` policy, with
        the error in their context.
        """
        if self.state is not PipelineState.BUILT or self.sink is not None:
            raise PipelineBuildError(f"pipeline {self.id!r} is already built")
        flat = flatten(components)
        sources = []
        while flat and isinstance(flat[0], Source):
            sources.append(flat.pop(0))
        if not sources:
            raise PipelineBuildError(f"pipeline {self.id!r}: build() must start with at least one Source, "
                                     f"got {_name(flat[0]) if flat else 'nothing'}")
        if not flat or not isinstance(flat[-1], Sink):
            raise PipelineBuildError(f"pipeline {self.id!r}: build() must end with a Sink, "
                                     f"got {_name(flat[-1]) if flat else 'only sources'}")
        sink = flat.pop()
        for component in flat:
            if not isinstance(component, Processor):
                raise PipelineBuildError(
                    f"pipeline {self.id!r}: {_name(component)} cannot stand between the sources and the sink; "
                    "only Processors and Generators can")
        seen: set[str] = set()
        for component in [*sources, *flat, sink, *([dead_letter] if dead_letter else [])]:
            if component.id in seen:
                raise PipelineBuildError(f"pipeline {self.id!r}: two components have the ID {component.id!r}; "
                                         "pass id=... to tell them apart")
            seen.add(component.id)
        uses_dead_letter = ErrorPolicy.DEAD_LETTER in (self.error_policy, self.retry_fallback)
        if uses_dead_letter and dead_letter is None:
                raise PipelineBuildError(
                    f"pipeline {self.id!r}: error_policy uses dead-letter but no dead-letter sink was given "
                    "(build(..., dead_letter=SomeSink(...)) or dead_letter = ComponentID in [pipeline:ID])")
        self.sources = sources
        self.processors = flat
        self.sink = sink
        self.dead_letter_sink = dead_letter
        self._stages = [_Stage(p, i) for i, p in enumerate(flat)]
        self._prepared = any(stage.prepare is not None for stage in self._stages)
        return self

    @property
    def components(self) -> list[Component]:
        """Every component in flow order (dead-letter sink last)."""
        result: list[Component] = [*self.sources, *self.processors]
        if self.sink is not None:
            result.append(self.sink)
        if self.dead_letter_sink is not None:
            result.append(self.dead_letter_sink)
        return result

    def locate(self, component_id: str) -> Component | None:
        """The component with this ID, or ``None``."""
        return next((c for c in self.components if c.id == component_id), None)

    # -- readiness ----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        """True when sources may emit."""
        return not self._throttles

    @property
    def throttles(self) -> frozenset[str]:
        """Why the pipeline is paused (empty when it is not)."""
        return frozenset(self._throttles)

    def throttle(self, reason: str) -> None:
        """Pause the sources until :meth:`unthrottle` with the same reason."""
        self._throttles.add(reason)
        self._ready.clear()

    def unthrottle(self, reason: str) -> None:
        """Lift one reason to pause; sources resume when none is left."""
        self._throttles.discard(reason)
        if not self._throttles:
            self._ready.set()

    async def wait_ready(self) -> None:
        """Return when sources may emit."""
        if self._throttles:
            await self._ready.wait()

    def retry_backoff(self) -> Backoff:
        """A fresh backoff following this pipeline's retry settings."""
        return Backoff(initial=self.Config.getseconds("retry_backoff"),
                       maximum=self.Config.getseconds("retry_backoff_max"))

    # -- hot path -----------------------------------------------------------------------------------------
    async def emit(
        self,
        events: list[Any],
        context: Context | None = None,
        contexts: Sequence[Context] | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Run a batch through the processors and hand the result to the sink.

        Waits first while the pipeline is throttled. ``contexts`` (one per event) or ``context`` (shared)
        travel with the events (``contexts`` may be :class:`~bspump.LazyContexts`: built only where read);
        ``delivery`` is acknowledged once every resulting event was written.
        """
        if self._throttles:
            if self.state is not PipelineState.RUNNING:
                raise PipelineStoppedError(f"pipeline {self.id!r} is {self.state.value}")
            await self._ready.wait()
            if self.state is not PipelineState.RUNNING:
                raise PipelineStoppedError(f"pipeline {self.id!r} is {self.state.value}")
        if delivery is None:
            delivery = Delivery()
        delivery.listener = self
        sink = self.sink
        assert sink is not None, "emit() on a pipeline that was never built"
        counters = self.counters
        counters.events_in += len(events)
        counters.sample(time.monotonic())
        retries: list[_Retry] = []
        try:
            if contexts is None:
                shared = context if context is not None else {}
                if self._prepared:
                    out = await self._run_shared_prepared(shared, events, delivery, retries)
                else:
                    out = self._run_shared(shared, events, delivery, retries)
                if retries:
                    out.extend(event for _, event in await self._retry(retries, delivery))
                batch = Batch(out, delivery, shared, None, sink.counters)
            else:
                if len(contexts) != len(events):
                    raise ValueError(f"emit() got {len(events)} events but {len(contexts)} contexts")
                if self._prepared:
                    contexts, out = await self._run_columns_prepared(contexts, events, delivery, retries, 0)
                else:
                    contexts, out = self._run_columns(contexts, events, delivery, retries)
                if retries:
                    recovered = await self._retry(retries, delivery)
                    if recovered:
                        contexts = as_list(contexts)
                        for recovered_context, recovered_event in recovered:
                            contexts.append(recovered_context)
                            out.append(recovered_event)
                batch = Batch(out, delivery, context, contexts, sink.counters)
        except StopRequested as stop:
            self.fail(stop.error)
            raise PipelineStoppedError(str(stop.error)) from stop.error.cause
        n = len(batch.events)
        if n:
            delivery.add(n)
            self.count_in_flight(n)
            if self.in_flight >= self.max_in_flight:
                self.throttle("in flight")
            sink.counters.events_in += n
            for tap in self._taps:
                tap(batch.events)
            sink.put(batch)
        delivery.seal()

    def _run_shared(
        self, context: Context, events: list[Any], delivery: Delivery, retries: list[_Retry],
        start: int = 0, stop: int | None = None,
    ) -> list[Any]:
        for stage in self._stages[start:stop] if start or stop is not None else self._stages:
            fn = stage.fn
            out: list[Any] = []
            it = iter(events)
            event = None
            if stage.generator:
                extend = out.extend
                mark = 0
                while True:
                    try:
                        for event in it:
                            mark = len(out)
                            extend(fn(context, event))
                        break
                    except Exception as exc:
                        del out[mark:]  # what the generator yielded before failing belongs to the failed event
                        self._processor_failed(stage, context, event, exc, delivery, retries)
            else:
                append = out.append
                while True:
                    try:
                        for event in it:
                            result = fn(context, event)
                            if result is not None:
                                append(result)
                        break
                    except Exception as exc:
                        self._processor_failed(stage, context, event, exc, delivery, retries)
            stage.count(len(events), len(out))
            events = out
            if not events:
                break
        return events

    def _run_columns(
        self,
        contexts: Sequence[Context],
        events: list[Any],
        delivery: Delivery,
        retries: list[_Retry],
        start: int = 0,
        stop: int | None = None,
    ) -> tuple[Sequence[Context], list[Any]]:
        """The per-event-context path: contexts and events stay two parallel lists; a stage that drops
        nothing leaves the context list untouched, so no (context, event) tuple is built per event.
        Lazy contexts are built before the first stage that reads them (never, if none does)."""
        for stage in self._stages[start:stop] if start or stop is not None else self._stages:
            if stage.generator:
                contexts, events = self._run_generator(stage, as_list(contexts), events, delivery, retries)
            else:
                contexts, events = self._run_processor(stage, contexts, events, delivery, retries)
            if not events:
                break
        return contexts, events

    def _run_processor(
        self, stage: _Stage, contexts: Sequence[Context], events: list[Any], delivery: Delivery,
        retries: list[_Retry],
    ) -> tuple[Sequence[Context], list[Any]]:
        """One processor over a batch with per-event contexts. A processor whose code never reads its context
        is called with a read-only placeholder, so that lazy contexts stay unbuilt; a failed event meets the
        error policy with its real context either way."""
        fn = stage.fn
        if stage.reads_context:
            contexts = as_list(contexts)
            it = zip(contexts, events, strict=True)
        else:
            it = zip(repeat(UNREAD_CONTEXT), events)
        out: list[Any] = []
        append = out.append
        holes = 0
        while True:
            try:
                for context, event in it:
                    result = fn(context, event)
                    if result is None:
                        holes += 1
                    append(result)
                break
            except Exception as exc:
                index = len(out)
                append(None)  # keeps events aligned with contexts; removed below
                holes += 1
                self._processor_failed(stage, contexts[index], events[index], exc, delivery, retries)
        if holes:
            contexts = select_contexts(contexts, [i for i, r in enumerate(out) if r is not None])
            out = [r for r in out if r is not None]
        stage.count(len(events), len(out))
        return contexts, out

    def _run_generator(
        self, stage: _Stage, contexts: list[Context], events: list[Any], delivery: Delivery,
        retries: list[_Retry],
    ) -> tuple[list[Context], list[Any]]:
        """One generator over a batch with per-event contexts: each output shares its input's context."""
        fn = stage.fn
        it = zip(contexts, events, strict=True)
        context: Context = {}
        event = None
        generated: list[Context] = []
        out: list[Any] = []
        mark = 0
        while True:
            try:
                for context, event in it:
                    mark = len(out)
                    for produced in fn(context, event):
                        out.append(produced)
                        generated.append(context)
                break
            except Exception as exc:
                del out[mark:], generated[mark:]  # the failed event's partial output
                self._processor_failed(stage, context, event, exc, delivery, retries)
        stage.count(len(events), len(out))
        return generated, out

    # -- processors that prepare ------------------------------------------------------------------------
    def _next_group(self, start: int) -> int:
        """The index of the first stage after ``start`` that prepares (or the end): the stages in between
        run synchronously as one group."""
        stages = self._stages
        for index in range(start + 1, len(stages)):
            if stages[index].prepare is not None:
                return index
        return len(stages)

    async def _prepare(self, stage: _Stage, events: list[Any]) -> None:
        assert stage.prepare is not None
        try:
            await stage.prepare(events)
        except Exception as exc:
            self._prepare_log.warning(stage.component.qualified_id,
                                      "%s: prepare() failed, its events go on without what it fetches: %s",
                                      stage.component.qualified_id, describe_error(exc))

    async def _run_shared_prepared(
        self, context: Context, events: list[Any], delivery: Delivery, retries: list[_Retry]
    ) -> list[Any]:
        start, end = 0, len(self._stages)
        while start < end and events:
            stage = self._stages[start]
            if stage.prepare is not None:
                await self._prepare(stage, events)
            stop = self._next_group(start)
            events = self._run_shared(context, events, delivery, retries, start, stop)
            start = stop
        return events

    async def _run_columns_prepared(
        self, contexts: Sequence[Context], events: list[Any], delivery: Delivery, retries: list[_Retry], start: int
    ) -> tuple[Sequence[Context], list[Any]]:
        end = len(self._stages)
        while start < end and events:
            stage = self._stages[start]
            if stage.prepare is not None:
                await self._prepare(stage, events)
            stop = self._next_group(start)
            contexts, events = self._run_columns(contexts, events, delivery, retries, start, stop)
            start = stop
        return contexts, events

    # -- errors -------------------------------------------------------------------------------------------
    def _processor_failed(
        self,
        stage: _Stage,
        context: Context,
        event: Any,
        error: Exception,
        delivery: Delivery,
        retries: list[_Retry],
    ) -> None:
        stage.failed += 1  # failed here, not dropped by the stage's own decision
        if self.error_policy is ErrorPolicy.RETRY:
            retries.append(_Retry(stage, context, event, error))
            return
        stage.counters.errors += 1
        self.counters.errors += 1
        self.policies.apply(self.error_policy, stage.component, context, event, error, delivery)

    async def _retry(self, pending: list[_Retry], delivery: Delivery) -> list[tuple[Context, Any]]:
        """Retry failed events with backoff (``retry_attempts`` each), then run them through the rest
        of the chain; what still fails gets ``retry_fallback``. Recovered events join the end of the batch."""
        backoff = self.retry_backoff()
        recovered: list[tuple[Context, Any]] = []
        while pending:
            await asyncio.sleep(backoff.next_delay())
            again: list[_Retry] = []
            for item in pending:
                stage = item.stage
                item.attempts += 1
                try:
                    result = stage.fn(item.context, item.event)
                    produced = list(result) if stage.generator else [] if result is None else [result]
                except Exception as exc:
                    if item.attempts < self.retry_attempts:
                        item.error = exc
                        again.append(item)
                        continue
                    stage.counters.errors += 1
                    self.counters.errors += 1
                    self.policies.apply(self.retry_fallback, stage.component, item.context, item.event, exc, delivery)
                    continue
                log.debug("%s: succeeded on retry %d after %s", stage.component.qualified_id, item.attempts,
                          item.error)
                stage.counters.events_out += len(produced)
                if not produced and not stage.generator:
                    stage.counters.dropped += 1
                contexts: Sequence[Context] = [item.context] * len(produced)
                if produced and stage.index + 1 < len(self._stages):
                    if self._prepared:
                        contexts, produced = await self._run_columns_prepared(
                            contexts, produced, delivery, again, stage.index + 1)
                    else:
                        contexts, produced = self._run_columns(contexts, produced, delivery, again, stage.index + 1)
                recovered.extend(zip(contexts, produced, strict=True))
            pending = again
        return recovered

    def reject(
        self,
        component: Component,
        context: Context,
        event: Any,
        error: BaseException,
        delivery: Delivery | None = None,
    ) -> None:
        """Apply the error policy to an event a source could not decode (invalid JSON, bad encoding).

        Pass the delivery of the batch the event belongs to, before emitting that batch, so that its
        position is committed only once the event is dead-lettered. Raises PipelineStoppedError under
        the ``stop`` policy.
        """
        self.counters.events_in += 1
        self.counters.errors += 1
        policy = self.retry_fallback if self.error_policy is ErrorPolicy.RETRY else self.error_policy
        own = delivery is None
        if delivery is None:
            delivery = Delivery()
        delivery.listener = self
        try:
            self.policies.apply(policy, component, context, event, error, delivery)
        except StopRequested as stop:
            self.fail(stop.error)
            raise PipelineStoppedError(str(stop.error)) from error
        if own:
            delivery.seal()

    def handle_sink_failure(self, sink: Sink, batch: Batch, index: int, error: BaseException) -> None:
        """Apply the error policy to event ``index`` of ``batch`` that ``sink`` could not write."""
        self.counters.errors += 1
        sink.counters.errors += 1
        policy = self.error_policy
        if policy is ErrorPolicy.RETRY:  # the sink already retried what was retryable
            policy = self.retry_fallback
        delivery = batch.delivery
        try:
            self.policies.apply(policy, sink, batch.context_of(index), batch.events[index], error, delivery)
        except StopRequested as stop:
            delivery.fail(stop.error)
            return
        delivery.ack(1)  # written elsewhere (dead letter, counted separately) or deliberately dropped

    # -- acknowledgements ----------------------------------------------------------------------------------
    def count_in_flight(self, count: int) -> None:
        """``count`` more events were handed to a sink (by :meth:`emit`, or as dead letters)."""
        self.in_flight += count
        self._drained.clear()

    def settled(self, count: int) -> None:
        """Called by deliveries: ``count`` events were acknowledged or given up, so no longer in flight."""
        in_flight = self.in_flight = self.in_flight - count
        # Resume at half the bound so that sources and sink do not flap around the limit.
        if in_flight <= self.max_in_flight // 2 and "in flight" in self._throttles:
            self.unthrottle("in flight")
        if in_flight <= 0:
            self._drained.set()

    def delivery_failed(self, delivery: Delivery, error: BaseException) -> None:
        """Called by a delivery whose events could not be written nor dead-lettered: the pipeline stops (also
        while it drains: the run must end as failed, with exit code 1)."""
        if self.state in (PipelineState.RUNNING, PipelineState.STOPPING):
            self.fail(error)

    # -- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start sinks, then the sources; called by the PumpService when the application runs."""
        if self.sink is None:
            raise PipelineBuildError(f"pipeline {self.id!r} was never built; call self.build(...) in __init__")
        self.state = PipelineState.RUNNING
        self.started_at = time.monotonic()
        for component in self.components:
            for connection in component.connections:
                if connection not in self._connections:
                    self._connections.append(connection)
                    connection.acquire(self)
                    # Opened by the PumpService at start already; a pipeline added to a running application
                    # (a notebook) may use a connection registered after that.
                    await connection.open()
                    connection.add_listener(self._connection_changed)
                    if not connection.ready:
                        self.throttle(f"connection {connection.id}")
        for sink in self._sinks():
            await sink.start()
        self.unthrottle("not started")
        for source in self.sources:
            task = asyncio.create_task(source.main(), name=f"source:{source.qualified_id}")
            task.add_done_callback(self._source_done)
            self._source_tasks.append(task)

    def _sinks(self) -> list[Sink]:
        return [s for s in (self.sink, self.dead_letter_sink) if s is not None]

    def _connection_changed(self, connection: Connection, state: ConnectionState) -> None:
        reason = f"connection {connection.id}"
        if state is ConnectionState.READY:
            self.unthrottle(reason)
        else:
            self.throttle(reason)

    def _source_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(error, PipelineStoppedError):
            # One line, like a crashed sink writer: the traceback only for whoever asked for debug output.
            log.error("pipeline %r: source task %s crashed: %s", self.id, task.get_name(), describe_error(error))
            log.debug("pipeline %r: source task %s traceback", self.id, task.get_name(), exc_info=error)
            self.fail(error)
            return
        if self.state is PipelineState.RUNNING and all(t.done() for t in self._source_tasks):
            log.info("pipeline %r: every source is exhausted; draining", self.id)
            self._schedule_stop()

    def fail(self, error: BaseException) -> None:
        """Stop the pipeline (and the application, exit code 1) because of ``error``; the first one is kept."""
        if self.error is None:
            self.error = error
            log.error("pipeline %r stops: %s", self.id, error)
        self._schedule_stop()
        self.app.stop(exit_code=1)

    def _schedule_stop(self) -> None:
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self.stop(), name=f"stop:{self.id}")

    async def stop(self) -> None:
        """Graceful stop: stop sources, flush sinks, drain in-flight events, commit, release connections."""
        if self.state in (PipelineState.BUILT, PipelineState.FINISHED, PipelineState.FAILED):
            return
        if self.state is PipelineState.STOPPING:
            await self._finished.wait()
            return
        self.state = PipelineState.STOPPING
        self.throttle("stopping")
        await self._stop_sources()
        timeout = self.Config.getseconds("drain_timeout")
        try:
            async with asyncio.timeout(timeout):
                for sink in self._sinks():
                    await sink.flush()
                await self._drained.wait()
        except TimeoutError:
            log.error("pipeline %r: %d events still unacknowledged after drain_timeout=%ss; their positions "
                      "are not committed and will be read again", self.id, self.in_flight, timeout)
        except Exception as exc:
            log.error("pipeline %r: flushing the sink failed: %s", self.id, exc)
        for source in self.sources:
            try:
                await source.on_drained()
            except Exception as exc:
                log.error("%s: committing positions at stop failed: %s", source.qualified_id, exc)
        closing: list[Sink | Source] = [*self._sinks(), *self.sources]
        for component in closing:
            try:
                await component.close()
            except Exception as exc:
                log.error("%s: close failed: %s", component.qualified_id, exc)
        for connection in self._connections:
            connection.remove_listener(self._connection_changed)
            await connection.release(self)
        self.stopped_at = time.monotonic()
        self.state = PipelineState.FAILED if self.error is not None else PipelineState.FINISHED
        self._ready.set()  # wake anything still waiting so it sees the state
        self._finished.set()
        log.info("pipeline %r %s: %s", self.id, self.state.value,
                 {k: v for k, v in self.metrics().items() if k in ("in", "out", "dropped", "errors")})
        self.app.pipeline_finished(self)

    async def _stop_sources(self) -> None:
        """Cancel the source tasks and wait for them; cancel again if a source swallowed the request
        (a library catching CancelledError, or asyncio.wait_for on Python 3.11 racing a result)."""
        current = asyncio.current_task()
        tasks = [t for t in self._source_tasks if t is not current]
        while True:
            pending = [t for t in tasks if not t.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=1.0)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def wait_finished(self) -> None:
        """Return once the pipeline stopped (sources exhausted or stop requested)."""
        await self._finished.wait()

    @property
    def finished(self) -> bool:
        """True once the pipeline has stopped."""
        return self._finished.is_set()

    # -- observation ----------------------------------------------------------------------------------------
    def add_tap(self, tap: Callable[[list[Any]], None]) -> None:
        """Call ``tap(events)`` with each batch the processors handed to the sink, before the sink takes it.

        For observation (a notebook keeps a sample of recent events): it runs on the event loop, once per batch,
        so it must be quick, and it must neither change nor keep the list (copy what it keeps).
        """
        self._taps.append(tap)

    def metrics(self) -> dict[str, Any]:
        """Counters of the pipeline and each component, plus events in flight and the rate."""
        snapshot: dict[str, Any] = self.counters.snapshot()
        snapshot["out"] = self.sink.counters.events_out if self.sink is not None else 0  # acknowledged only
        snapshot["dropped"] = self.counters.dropped + sum(s.counters.dropped for s in self._stages)
        snapshot["in_flight"] = self.in_flight
        snapshot["state"] = self.state.value
        snapshot["throttles"] = sorted(self._throttles)
        components: dict[str, Any] = {}
        for component in self.components:
            counters: dict[str, Any] = component.counters.snapshot()
            gauges = component.gauges()
            if gauges:
                counters["gauges"] = dict(gauges)
            components[component.id] = counters
        snapshot["components"] = components
        return snapshot

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id!r} {self.state.value}>"


def _name(component: Any) -> str:
    return f"{type(component).__name__} {getattr(component, 'id', '')!r}".strip()


def flatten(items: Iterable[Any]) -> list[Any]:
    """One level of flattening, for build() arguments given as lists."""
    result: list[Any] = []
    for item in items:
        result.extend(item) if isinstance(item, list | tuple) else result.append(item)
    return result
