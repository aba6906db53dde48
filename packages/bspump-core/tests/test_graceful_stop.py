"""Graceful stop: stop sources, drain in-flight events, flush sinks, commit positions, disconnect."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from conftest import SlowSink, make_app, run_app, wait_for

import bspump
from bspump import PositionTracker


class LoggingConnection(bspump.Connection):
    def __init__(self, app: Any, connection_id: str, log: list[str]) -> None:
        super().__init__(app, connection_id)
        self.log = log

    async def connect(self) -> None:
        self.log.append("connect")

    async def disconnect(self) -> None:
        self.log.append("disconnect")


class InfiniteTrackedSource(bspump.Source):
    """An endless partitioned stream; commits only acknowledged positions, records what it emitted."""

    def __init__(self, *args: Any, log: list[str], batch_size: int = 20, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log = log
        self.batch_size = batch_size
        self.tracker = PositionTracker()
        self.emitted = 0
        self.in_flight_at_drain: int | None = None

    async def main(self) -> None:
        offset = 0
        while True:
            events = [{"offset": offset + i} for i in range(self.batch_size)]
            offset += self.batch_size
            await self.emit(events, {"partition": 0}, delivery=self.tracker.track({0: offset}))
            self.emitted += len(events)
            await asyncio.sleep(0)

    async def on_drained(self) -> None:
        self.in_flight_at_drain = self.pipeline.in_flight
        self.log.append(f"on_drained committable={self.tracker.take_committable()}")


def assemble(app: bspump.BSPumpApplication, log: list[str], sink_delay: float,
             config: dict[str, Any] | None = None) -> bspump.Pipeline:
    svc = app.get_service("bspump.PumpService")
    svc.add_connection(LoggingConnection(app, "C", log))
    p = bspump.Pipeline(app, "P", config={"max_in_flight": 200, **(config or {})})
    p.build(InfiniteTrackedSource(app, p, log=log, connection="C"),
            SlowSink(app, p, delay=sink_delay, log=log, connection="C"))
    return svc.add_pipeline(p)


async def test_stop_mid_stream_loses_no_in_flight_event() -> None:
    app = make_app()
    log: list[str] = []
    p = assemble(app, log, sink_delay=0.003)
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: len(p.sink.written) >= 200)
    assert p.in_flight > 0, "nothing in flight: the test would prove nothing"
    in_flight_at_stop = p.in_flight
    app.stop()
    assert await runner == 0
    source = p.sources[0]
    assert source.emitted == len(p.sink.written) > 0
    assert [e["offset"] for e in p.sink.written] == list(range(source.emitted))
    assert p.in_flight == 0 and in_flight_at_stop > 0
    assert source.in_flight_at_drain == 0
    # order: every write acknowledged, then on_drained (commit), then the connection closes
    drained = next(i for i, entry in enumerate(log) if entry.startswith("on_drained"))
    last_write = max(i for i, entry in enumerate(log) if entry.startswith("write"))
    assert last_write < drained < log.index("disconnect") == len(log) - 1
    assert log[drained] == f"on_drained committable={{0: {source.emitted}}}"
    assert p.state is bspump.PipelineState.FINISHED
    assert app.pump_service.connections["C"].state is bspump.ConnectionState.CLOSED


async def test_drain_timeout_logs_an_error_and_leaves_positions_uncommitted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app()
    log: list[str] = []
    p = assemble(app, log, sink_delay=0.001, config={"drain_timeout": "100ms"})
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: len(p.sink.written) >= 100)
    p.sink.delay = 3600.0  # the external system hangs
    await wait_for(lambda: p.in_flight > 0 and p.sink._queue)
    app.stop()
    assert await runner == 0
    assert "still unacknowledged after drain_timeout=0.1s" in caplog.text
    assert "are not committed and will be read again" in caplog.text
    source = p.sources[0]
    # exactly what was written is committed; nothing beyond the hanging batch
    assert source.tracker.committed_view().get(0) == len(p.sink.written)
    assert source.emitted > len(p.sink.written)
    assert source.tracker.pending() > 0
    assert log[-1] == "disconnect"


async def test_stop_cancels_again_a_source_that_swallowed_the_cancellation() -> None:
    """A client library that eats one CancelledError (asyncio.wait_for on 3.11 can) must not hang the stop."""
    app = make_app()

    class Stubborn(bspump.Source):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.swallowed = 0

        async def main(self) -> None:
            n = 0
            while True:
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if self.swallowed == 0:
                        self.swallowed += 1
                        continue  # the first cancellation is lost inside "the library"
                    raise
                if not self.swallowed:  # after the lost cancellation it only waits: it needs a second one
                    await self.emit([n])
                    n += 1

    p = bspump.Pipeline(app, "P")
    p.build(Stubborn(app, p), bspump.MemorySink(app, p))
    app.get_service("bspump.PumpService").add_pipeline(p)
    task = asyncio.create_task(run_app(app))
    await wait_for(lambda: len(p.sink.events) >= 3)
    app.stop()
    assert await asyncio.wait_for(task, 10) == 0
    assert p.sources[0].swallowed == 1
    assert p.state is bspump.PipelineState.FINISHED
    assert p.sink.events == list(range(len(p.sink.events)))  # in order, nothing lost
