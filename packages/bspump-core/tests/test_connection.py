"""Connection lifecycle: states, reconnect with capped backoff, pause/resume of pipelines, sharing."""

from __future__ import annotations

import asyncio
import re
from typing import Any, ClassVar

import pytest
from conftest import CountingSource, SlowSink, make_app, run_app, wait_for, write_conf

import bspump
from bspump import ConnectionState as S
from bspump.backoff import Backoff

FAST = {"reconnect_initial": 0.01, "reconnect_max": 0.04, "reconnect_jitter": 0.0}


class FlakyConnection(bspump.Connection):
    """A fake external system: ``connect()`` fails ``fail_times`` times, then succeeds.

    While ``gate`` is cleared, connect() blocks (a server that is slow to come back)."""

    def __init__(self, app: Any, connection_id: str, config: Any = None, fail_times: int = 0,
                 log: list[str] | None = None) -> None:
        super().__init__(app, connection_id, config=config)
        self.fail_times = fail_times
        self.connect_calls = 0
        self.disconnect_calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.log = log if log is not None else []

    async def connect(self) -> None:
        self.connect_calls += 1
        await self.gate.wait()
        if self.fail_times > 0:
            self.fail_times -= 1
            raise ConnectionRefusedError(111, "connection refused")
        self.log.append("connect")

    async def disconnect(self) -> None:
        self.disconnect_calls += 1
        self.log.append("disconnect")


class OnePipeline(bspump.Pipeline):
    def __init__(self, app: Any, pipeline_id: str, source: Any = None, sink: Any = None,
                 config: Any = None) -> None:
        super().__init__(app, pipeline_id, config=config or {"max_in_flight": 100})
        self.build(source(self) if source else bspump.MemorySource(app, self, events=range(5), connection="C"),
                   sink(self) if sink else bspump.MemorySink(app, self, connection="C"))


def recorder(connection: bspump.Connection) -> list[S]:
    states: list[S] = []
    connection.add_listener(lambda _c, state: states.append(state))
    return states


# -- backoff ----------------------------------------------------------------------------------------------
def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = Backoff(initial=0.5, maximum=4.0, multiplier=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


def test_backoff_jitter_stays_within_bounds_and_cap() -> None:
    import random

    for seed in range(50):
        backoff = Backoff(initial=1.0, maximum=10.0, multiplier=2.0, jitter=0.25, _random=random.Random(seed))
        delays = [backoff.next_delay() for _ in range(8)]
        for n, delay in enumerate(delays):
            base = min(10.0, 2.0**n)
            assert base * 0.75 <= delay <= min(10.0, base * 1.25)
    # jitter actually spreads delays (clients that lost one server do not retry in lockstep)
    spread = {Backoff(initial=1.0, jitter=0.5, _random=random.Random(s)).next_delay() for s in range(20)}
    assert len(spread) > 10


def test_backoff_survives_a_very_long_outage() -> None:
    """A 24/7 pipeline retrying for ever must not crash its reconnect loop after ~1000 attempts."""
    backoff = Backoff(initial=0.5, maximum=30.0, multiplier=2.0, jitter=0.2, attempt=5000)
    assert 24.0 <= backoff.next_delay() <= 30.0


# -- lifecycle --------------------------------------------------------------------------------------------
async def test_lifecycle_states_in_order(app: bspump.BSPumpApplication, svc: bspump.PumpService) -> None:
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST))
    assert conn.state is S.CREATED and not conn.ready
    states = recorder(conn)
    pipeline = svc.add_pipeline(OnePipeline(app, "P"))
    assert await run_app(app) == 0
    assert states == [S.CONNECTING, S.READY, S.CLOSING, S.CLOSED]
    assert pipeline.sink.events == [0, 1, 2, 3, 4]
    assert conn.connect_calls == 1 and conn.disconnect_calls == 1


async def test_reconnect_after_failing_connect_calls_with_growing_capped_backoff(
    app: bspump.BSPumpApplication, svc: bspump.PumpService, caplog: pytest.LogCaptureFixture
) -> None:
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST, fail_times=4))
    states = recorder(conn)
    pipeline = svc.add_pipeline(OnePipeline(app, "P"))
    assert await run_app(app) == 0
    assert conn.connect_calls == 5 and conn.connect_count == 1
    assert isinstance(conn.last_error, ConnectionRefusedError)
    # failing attempts do not flap the state; the pipeline waited and then got every event through
    assert states == [S.CONNECTING, S.READY, S.CLOSING, S.CLOSED]
    assert pipeline.sink.events == [0, 1, 2, 3, 4]
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+)s", caplog.text)]
    assert delays == [0.01, 0.02, 0.04, 0.04]
    # half-open clients are cleaned up before each retry, and once at shutdown
    assert conn.disconnect_calls == 4 + 1


async def test_max_connect_attempts_gives_up_and_fails_the_app(
    app: bspump.BSPumpApplication, svc: bspump.PumpService
) -> None:
    conn = svc.add_connection(FlakyConnection(app, "C", config={**FAST, "max_connect_attempts": 3}, fail_times=99))
    pipeline = svc.add_pipeline(OnePipeline(app, "P"))
    assert await run_app(app) == 1
    assert conn.connect_calls == 3
    assert pipeline.sink.events == []
    assert conn.state is S.CLOSED


async def test_report_failure_reconnects_and_pauses_then_resumes_the_pipeline(
    app: bspump.BSPumpApplication, svc: bspump.PumpService
) -> None:
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST))
    states = recorder(conn)
    pipeline = svc.add_pipeline(OnePipeline(
        app, "P",
        source=lambda p: CountingSource(app, p, batch_size=5, connection="C"),
        sink=lambda p: SlowSink(app, p, delay=0.001, connection="C"),
    ))
    runner = asyncio.create_task(run_app(app))
    source = pipeline.sources[0]
    await wait_for(lambda: source.emitted >= 50)
    assert "connection C" not in pipeline.throttles

    conn.gate.clear()  # the server is down for a while: reconnect attempts hang ...
    conn.fail_times = 2  # ... and the first two fail
    conn.report_failure(OSError("broken pipe"))
    assert conn.failure_count == 1
    await wait_for(lambda: conn.state is S.RECONNECTING)
    assert not conn.ready
    assert not pipeline.ready
    assert "connection C" in pipeline.throttles
    paused_at = source.emitted
    await asyncio.sleep(0.05)
    assert source.emitted == paused_at, "the source kept emitting while its connection was down"

    conn.report_failure(OSError("again"))  # already reconnecting: ignored
    assert conn.failure_count == 1

    conn.gate.set()
    await wait_for(lambda: conn.ready)
    await wait_for(lambda: source.emitted > paused_at + 20)
    assert "connection C" not in pipeline.throttles
    app.stop()
    assert await runner == 0
    assert states == [S.CONNECTING, S.READY, S.RECONNECTING, S.READY, S.CLOSING, S.CLOSED]
    assert conn.connect_calls == 1 + 3
    # every event emitted before, during and after the outage was written
    assert pipeline.sink.written == list(range(source.emitted))


async def test_shared_connection_connects_once_and_closes_after_the_last_pipeline_drained(
    app: bspump.BSPumpApplication, svc: bspump.PumpService
) -> None:
    log: list[str] = []
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST, log=log))

    class LoggingSink(SlowSink):
        async def write(self, batch: bspump.Batch) -> None:
            await super().write(batch)
            log.append(f"write {self.pipeline.id}")

    fast = svc.add_pipeline(OnePipeline(app, "Fast", source=lambda p: CountingSource(app, p, connection="C"),
                                        sink=lambda p: LoggingSink(app, p, delay=0.001, connection="C")))
    slow = svc.add_pipeline(OnePipeline(app, "Slow", source=lambda p: CountingSource(app, p, connection="C"),
                                        sink=lambda p: LoggingSink(app, p, delay=0.02, connection="C")))
    runner = asyncio.create_task(run_app(app))
    await wait_for(lambda: fast.sink.written and slow.sink.written)
    assert conn.users == 2
    app.stop()
    assert await runner == 0
    assert conn.connect_calls == 1
    assert log.count("connect") == 1 and log.count("disconnect") == 1
    assert log[-1] == "disconnect"
    assert log.index("disconnect") > max(i for i, entry in enumerate(log) if entry == "write Slow")
    for pipeline in (fast, slow):
        assert pipeline.sink.written == list(range(pipeline.sources[0].emitted))
    assert conn.users == 0 and conn.state is S.CLOSED


async def test_connection_shared_by_pipelines_stays_open_while_one_still_runs() -> None:
    app = make_app()
    svc = app.get_service("bspump.PumpService")
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST))
    short = svc.add_pipeline(OnePipeline(app, "Short"))  # 5 events, then exhausted
    long = svc.add_pipeline(OnePipeline(app, "Long", source=lambda p: CountingSource(app, p, connection="C"),
                                        sink=lambda p: SlowSink(app, p, delay=0.001, connection="C")))
    runner = asyncio.create_task(run_app(app))
    await short.wait_finished()
    assert conn.state is S.READY and conn.users == 1
    await wait_for(lambda: len(long.sink.written) > 100)
    app.stop()
    assert await runner == 0
    assert conn.state is S.CLOSED and conn.disconnect_calls == 1


def test_unknown_connection_id_fails_at_build_time_listing_known_ids(
    app: bspump.BSPumpApplication, svc: bspump.PumpService
) -> None:
    svc.add_connection(FlakyConnection(app, "KafkaConnection"))
    svc.add_connection(FlakyConnection(app, "PG"))
    with pytest.raises(bspump.UnknownConnectionError) as info:
        OnePipeline(app, "P", source=lambda p: bspump.MemorySource(app, p, connection="KafkaConection"))
    message = str(info.value)
    assert "'KafkaConection'" in message
    assert "'KafkaConnection'" in message and "'PG'" in message
    assert "P.MemorySource" in message
    assert info.value.known == ["KafkaConnection", "PG"]
    assert "P" not in svc.pipelines


def test_unknown_connection_id_from_the_config_file(tmp_path: Any) -> None:
    path = write_conf(tmp_path, "[pipeline:P:MemorySource]\nconnection = Missing\n")
    app = make_app(path)
    with pytest.raises(bspump.UnknownConnectionError, match="known connection IDs: none"):
        OnePipeline(app, "P", source=lambda p: bspump.MemorySource(app, p))


async def test_duplicate_connection_id_is_rejected(app: bspump.BSPumpApplication, svc: bspump.PumpService) -> None:
    svc.add_connection(FlakyConnection(app, "C"))
    with pytest.raises(bspump.DuplicateIdError):
        svc.add_connection(FlakyConnection(app, "C"))


# -- the seed page's "Custom Connections" example, as written ---------------------------------------------
class FakeClient:
    instances: ClassVar[list[FakeClient]] = []

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port, self.closed = host, port, False
        FakeClient.instances.append(self)

    async def close(self) -> None:
        self.closed = True


async def create_client(host: str, port: int) -> FakeClient:
    await asyncio.sleep(0)
    return FakeClient(host, port)


class MyConnection(bspump.Connection):
    def __init__(self, app, connection_id, config=None):
        super().__init__(app, connection_id, config=config)
        self.client = None

    async def connect(self):
        self.client = await create_client(
            host=self.Config.get("host"),
            port=self.Config.getint("port")
        )

    async def disconnect(self):
        if self.client:
            await self.client.close()


async def test_seed_custom_connection_example(tmp_path: Any) -> None:
    FakeClient.instances.clear()
    path = write_conf(tmp_path, "[connection:MyConnection]\nhost = db.internal\nport = ${DB_PORT:-6000}\n"
                                "reconnect_initial = 250ms\n")
    app = make_app(path)
    svc = app.get_service("bspump.PumpService")
    conn = svc.add_connection(MyConnection(app, "MyConnection"))
    assert conn.Config.get("host") == "db.internal"
    assert conn.Config.getfloat("reconnect_initial") == 0.25
    assert conn.Config.unknown_keys == ["host", "port"]

    class MyPipeline(bspump.Pipeline):
        def __init__(self, app, pipeline_id):
            super().__init__(app, pipeline_id)
            self.build(
                bspump.MemorySource(app, self, events=[{"n": 1}], connection="MyConnection"),
                bspump.MemorySink(app, self, connection="MyConnection"),
            )

    pipeline = svc.add_pipeline(MyPipeline(app, "MyPipeline"))
    assert await run_app(app) == 0
    assert pipeline.sink.events == [{"n": 1}]
    [client] = FakeClient.instances
    assert (client.host, client.port) == ("db.internal", 6000)
    assert client.closed
    assert conn.state is S.CLOSED


async def test_two_failure_reports_in_one_turn_start_one_reconnect(
    app: bspump.BSPumpApplication, svc: bspump.PumpService
) -> None:
    """Two clients of one connection (or a source and a sink) report the same outage together: one reconnect."""
    conn = svc.add_connection(FlakyConnection(app, "C", config=FAST))
    await conn.open()
    await conn.wait_ready(5)
    conn.report_failure(OSError("subscriber lost"))
    conn.report_failure(OSError("publisher lost"))  # same turn of the loop, before the reconnect task ran
    assert conn.state is S.RECONNECTING and conn.failure_count == 1
    await conn.wait_ready(5)
    assert conn.connect_calls == 2 and conn.disconnect_calls == 1
    await conn.close()
